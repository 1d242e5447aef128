"""Shots of a small ideal circuit measured only at its end: Aer computes the final state once, the
shots are drawn here from its probabilities.

Aer samples such a circuit from one simulation too, but it builds each shot's classical register and
its hexadecimal key: about 0.9 ms per 1,024 shots, where the simulation of a few qubits takes 0.1 ms
(measured: a 2-qubit, 5-gate circuit took 1.6 ms with 1,024 shots, 0.6 ms with one). A VQE step
measures two such circuits. Drawing the counts from the probabilities is one multinomial draw, and
the shots have the same distribution; only the stream of random numbers behind a seed differs from
Aer's (a seed still gives the same counts every time). The measured qubits' probabilities come from an
AerState (final_states.py), not from an AerSimulator run's saved probabilities (19 ms at 13 qubits,
measured).

Only circuits whose every operation before the measurements is a gate (unitary, so the state before
measuring is one state for every shot), whose measurements come last (nothing but barriers after the
first), each qubit and each classical bit measured at most once, and whose classical bits all belong
to exactly one register, are sampled here; anything else goes to Aer's own sampling.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Gate
from qiskit.result.postprocess import format_counts, format_counts_memory

_AFTER_MEASUREMENTS = frozenset({"measure", "barrier"})
_unseeded: tuple[int, np.random.Generator] | None = None  # (the process it was made in, the generator)


def generator(seed: int | None) -> np.random.Generator:
    """The random numbers of a run: with a seed, a generator of its own (the seed's draws repeat);
    without, this process's one, made once from the system's entropy (and again in a forked child, which
    must not repeat its parent's draws). A generator made afresh costs 6-9 us in a loop but 65-170 us as
    a worker meets it, a few milliseconds after its last run (measured; bench_gaps shows why), and the
    sampler primitive's run made two."""
    global _unseeded
    if seed is not None:
        return np.random.default_rng(seed)
    if _unseeded is None or _unseeded[0] != os.getpid():
        _unseeded = (os.getpid(), np.random.default_rng())
    return _unseeded[1]


@dataclasses.dataclass(frozen=True)
class FinalMeasurements:
    """A circuit's gates (each with the indices of its qubits) to simulate once, the qubits it then
    measures and where each one's outcome goes."""

    num_qubits: int
    gates: list[tuple[Gate, list[int]]]
    qubits: list[int]  # the measured qubits, in the order of their measurements
    clbits: list[int]  # the classical bit of the j-th measured qubit


def final_measurements(circuit: QuantumCircuit) -> FinalMeasurements | None:
    """The circuit as it can be sampled from its final state's probabilities, or None."""
    if sum(register.size for register in circuit.cregs) != circuit.num_clbits or len(
            {bit for register in circuit.cregs for bit in register}) != circuit.num_clbits:
        return None
    gates: list[tuple[Gate, list[int]]] = []
    qubits: list[int] = []
    clbits: list[int] = []
    measuring = False
    for instruction in circuit.data:
        operation = instruction.operation
        name = operation.name
        if name == "measure":
            measuring = True
            qubits.append(circuit.find_bit(instruction.qubits[0]).index)
            clbits.append(circuit.find_bit(instruction.clbits[0]).index)
        elif measuring and name not in _AFTER_MEASUREMENTS:
            return None
        elif name == "barrier":
            continue
        elif not isinstance(operation, Gate) or instruction.clbits:
            return None
        else:
            gates.append((operation, [circuit.find_bit(qubit).index for qubit in instruction.qubits]))
    if not qubits or len(set(qubits)) != len(qubits) or len(set(clbits)) != len(clbits):
        return None
    return FinalMeasurements(circuit.num_qubits, gates, qubits, clbits)


def draw_shots(
    probabilities: np.ndarray, plan: FinalMeasurements, circuit: QuantumCircuit, shots: int,
    rng: np.random.Generator, memory: bool,
) -> tuple[dict[str, int], list[str]]:
    """Counts (keys as Qiskit prints them for circuit's registers) and, with memory, each shot's
    outcome, drawn from the probabilities of the measured qubits' outcomes (final_states.py). Only the outcomes
    drawn are formatted: a 13-qubit circuit has 8,192, and 1,024 shots draw at most 1,024 of them.

    The counts are one multinomial draw; the memory is those shots in shot_order (drawing each shot
    with rng.choice and counting them with np.unique made the memory's part of 1,024 Bell shots 4-5x as
    long: ~120-165 us against ~33, warm loop)."""
    probabilities = probabilities / probabilities.sum()
    header = {"creg_sizes": [[r.name, r.size] for r in circuit.cregs], "memory_slots": circuit.num_clbits}

    def written(outcome: int) -> str:  # the classical bits the outcome writes, as hexadecimal
        return hex(sum(1 << clbit for j, clbit in enumerate(plan.clbits) if outcome >> j & 1))

    drawn_counts = rng.multinomial(shots, probabilities)
    outcomes = np.flatnonzero(drawn_counts)
    times = drawn_counts[outcomes]
    if not memory:
        return format_counts({written(k): int(n) for k, n in zip(outcomes.tolist(), times.tolist(), strict=True)},
                             header), []
    keys = [format_counts_memory(written(k), header) for k in outcomes.tolist()]
    counts = dict(zip(keys, times.tolist(), strict=True))
    return counts, np.array(keys, dtype=object)[shot_order(times, rng)].tolist()


def shot_order(times, rng: np.random.Generator) -> np.ndarray:
    """Shots of counts drawn at once, in a uniformly random order, as indices into times (how many shots
    gave each outcome): distributed as shots drawn one by one."""
    return rng.permutation(np.repeat(np.arange(len(times)), times))
