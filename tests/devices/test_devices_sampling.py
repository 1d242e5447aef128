"""Small ideal circuits measured at their end: simulated once by Aer, their shots drawn from the
probabilities (sampling.py). What a user sees must be what Aer's own sampling gives: the same keys,
registers and per-shot memory, the same distribution within sampling error, and a seed that repeats."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Clbit
from qiskit.quantum_info import Statevector
from qiskit_aer import AerSimulator
from scipy.stats import chisquare

from qruntime_devices import sampling
from qruntime_devices.adapters import run_on_aer
from qruntime_devices.sampling import final_measurements

SHOTS = 20_000
ALPHA = 1e-3  # a false alarm once in a thousand runs
SIMULATOR = AerSimulator()


def _two_registers() -> QuantumCircuit:
    """Two registers, a qubit left unmeasured, outcomes written to bits out of order, a barrier."""
    circuit = QuantumCircuit(QuantumRegister(3, "q"), ClassicalRegister(2, "a"), ClassicalRegister(1, "b"))
    circuit.h(0)
    circuit.ry(0.7, 1)
    circuit.cx(0, 2)
    circuit.barrier()
    circuit.measure(0, 2)
    circuit.measure(1, 0)
    return circuit


def _run(circuit: QuantumCircuit, seed: int | None = 7, memory: bool = False, simulator=SIMULATOR):
    return run_on_aer(simulator, "test", [circuit], [circuit], SHOTS, seed, memory)[0]


def test_a_circuit_measured_at_its_end_is_sampled_from_its_probabilities():
    assert final_measurements(_two_registers()) is not None


@pytest.mark.parametrize("build", [
    lambda c: (c.h(0), c.measure(0, 0), c.x(1), c.measure(1, 1)),  # a gate after a measurement
    lambda c: (c.h(0), c.reset(0), c.measure([0, 1], [0, 1])),  # not unitary
    lambda c: (c.h(0), c.measure(0, 0), c.measure(0, 1)),  # a qubit measured twice
    lambda c: (c.h(0), c.measure(0, 0), c.measure(1, 0)),  # a bit written twice
    lambda c: (c.h(0),),  # nothing measured
])
def test_other_circuits_are_left_to_aer(build):
    circuit = QuantumCircuit(2, 2)
    build(circuit)
    assert final_measurements(circuit) is None


def test_bits_outside_any_register_are_left_to_aer():
    circuit = QuantumCircuit(QuantumRegister(1, "q"), [Clbit()])
    circuit.h(0)
    circuit.measure(0, 0)
    assert final_measurements(circuit) is None


def test_keys_and_memory_are_formatted_as_aer_formats_them():
    deterministic = QuantumCircuit(QuantumRegister(3, "q"), ClassicalRegister(2, "a"), ClassicalRegister(1, "b"))
    deterministic.x(0)
    deterministic.measure(0, 2)
    deterministic.measure(2, 0)
    ours = _run(deterministic, memory=True)
    aer = SIMULATOR.run(deterministic, shots=SHOTS, memory=True).result()
    assert dict(ours.counts) == aer.get_counts() == {"1 00": SHOTS}
    assert list(ours.memory) == aer.get_memory()
    assert list(ours.register_names) == ["b", "a"]


def test_the_widest_small_circuit_marginalises_its_state_as_aer_measures_it():
    """13 qubits (the largest sampled here), every other one flipped, seven measured out of order."""
    circuit = QuantumCircuit(13, 7)
    circuit.x(range(0, 13, 2))
    circuit.h(1)
    circuit.measure([12, 1, 4, 3, 0, 9, 6], range(7))
    ours = _run(circuit, seed=None)
    aer = SIMULATOR.run(circuit, shots=SHOTS).result().get_counts()
    assert set(ours.counts) == set(aer) == {"1010111", "1010101"}  # c6..c0 = q6 q9 q0 q3 q4 q1 q12: q1 a coin


def test_the_shots_follow_the_circuits_distribution():
    circuit = _two_registers()
    ours = _run(circuit, seed=None)
    aer = SIMULATOR.run(circuit, shots=SHOTS).result().get_counts()
    assert set(ours.counts) == set(aer)
    # The exact distribution; its keys read qubit 1 then qubit 0. Qubit 0 goes to bit 2 (register b),
    # qubit 1 to bit 0 (register a's low bit), so Qiskit prints "q0 0q1".
    exact = Statevector(circuit.remove_final_measurements(inplace=False)).probabilities_dict([0, 1])
    expected = {f"{key[1]} 0{key[0]}": p * SHOTS for key, p in exact.items() if p > 1e-12}
    keys = sorted(expected)
    assert chisquare([ours.counts[k] for k in keys], [expected[k] for k in keys]).pvalue > ALPHA
    assert sum(ours.counts.values()) == SHOTS


def test_per_shot_memory_agrees_with_the_counts():
    ours = _run(_two_registers(), memory=True)
    assert len(ours.memory) == SHOTS
    assert {key: list(ours.memory).count(key) for key in set(ours.memory)} == dict(ours.counts)


def test_per_shot_memory_is_ordered_as_shots_drawn_one_by_one():
    """The memory is the counts' shots in a random order: as many neighbours alike as independent shots
    give (shots grouped by outcome would make nearly every neighbour alike), the same for a seed."""
    memory = list(_run(_two_registers(), memory=True).memory)
    alike = sum(a == b for a, b in zip(memory, memory[1:], strict=False))
    p_alike = sum((memory.count(key) / SHOTS) ** 2 for key in set(memory))
    expected = (SHOTS - 1) * p_alike
    assert abs(alike - expected) < 5 * math.sqrt(expected * (1 - p_alike))
    assert list(_run(_two_registers(), memory=True, seed=3).memory) == list(
        _run(_two_registers(), memory=True, seed=3).memory)


def test_a_seed_gives_the_same_shots_every_time_and_another_seed_others():
    circuit = _two_registers()
    assert dict(_run(circuit, seed=3).counts) == dict(_run(circuit, seed=3).counts)
    assert dict(_run(circuit, seed=3).counts) != dict(_run(circuit, seed=4).counts)


def test_other_simulation_methods_keep_aers_own_sampling():
    stabilizer = AerSimulator(method="stabilizer")
    bell = QuantumCircuit(2, 2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    ours = _run(bell, seed=5, simulator=stabilizer)
    assert dict(ours.counts) == stabilizer.run(bell, shots=SHOTS, seed_simulator=5).result().get_counts()


def test_a_seed_has_a_generator_of_its_own_and_unseeded_runs_share_the_process_one_a_fork_makes_anew():
    assert sampling.generator(7).integers(1 << 62) == sampling.generator(7).integers(1 << 62)
    assert sampling.generator(None) is sampling.generator(None)
    assert sampling.generator(7) is not sampling.generator(7)
    # A forked child (a zygote's) must not draw what its parent draws next. Forked from a process of one
    # thread: forking pytest's, with other threads holding locks, could hang the child.
    script = textwrap.dedent("""
        import os
        from qruntime_devices import sampling
        sampling.generator(None)  # the parent's, made before the fork
        read, write = os.pipe()
        if os.fork() == 0:
            os.write(write, int(sampling.generator(None).integers(1 << 62)).to_bytes(8, "big"))
            os._exit(0)
        os.wait()
        child = int.from_bytes(os.read(read, 8), "big")
        print(child != int(sampling.generator(None).integers(1 << 62)))
    """)
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "True", ran.stderr


def test_the_kept_aer_state_gives_aerstatevectors_probabilities_and_survives_a_failed_circuit():
    # final_states.py applies gates as AerStatevector does, in one AerState a thread keeps: the same
    # probabilities, for the measured qubits in the order measured, gate after gate of every kind.
    from qiskit.circuit import Parameter
    from qiskit.circuit.random import random_circuit
    from qiskit_aer.quantum_info import AerStatevector

    from qruntime_devices.final_states import measured_probabilities

    for seed in range(12):
        circuit = random_circuit(5, 6, max_operands=3, measure=False, seed=seed)
        measured = [4, 0, 2] if seed % 2 else [1, 3]
        plan_circuit = circuit.copy()
        plan_circuit.add_register(ClassicalRegister(len(measured), "m"))
        plan_circuit.measure(measured, range(len(measured)))
        plan = final_measurements(plan_circuit)
        assert plan is not None and plan.qubits == measured
        ours = measured_probabilities(plan.num_qubits, plan.gates, plan.qubits)
        theirs = Statevector(AerStatevector(circuit).data).probabilities(measured)
        assert ours == pytest.approx(theirs, abs=1e-9), seed
    unbound = QuantumCircuit(1)
    unbound.rx(Parameter("t"), 0)
    with pytest.raises(Exception):  # noqa: B017 - Aer's own kind of failure
        measured_probabilities(1, [(unbound.data[0].operation, [0])], [0])
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    assert measured_probabilities(2, [(i.operation, [bell.find_bit(q).index for q in i.qubits]) for i in bell.data],
                                  [0, 1]) == pytest.approx([0.5, 0, 0, 0.5])
