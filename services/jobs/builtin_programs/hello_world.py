"""hello-world: IBM's sample runtime program. Runs a small random circuit `iterations` times,
publishing each run's counts as an interim result, and returns "All done!"."""

from __future__ import annotations

import random
from typing import Any

from .common import integer, optional_seed, program_logger
from .entry import CatalogueEntry, Input

log = program_logger("hello_world")
NUM_QUBITS, DEPTH, SHOTS = 5, 4, 1024

ENTRY = CatalogueEntry(
    id="hello-world",
    description=(
        "A sample runtime program. It prints 'Hello, World!', then runs a random circuit on the "
        "backend `iterations` times, publishing the counts of each run as an interim result."
    ),
    results="the string 'All done!'; each iteration's counts are interim results.",
    inputs={
        "iterations": Input("INTEGER", "How many times to run the circuit."),
        "seed": Input("INTEGER", "Seed of the random circuits, for reproducible runs."),
    },
    max_execution_seconds=300,
)


def main(backend: Any, user_messenger: Any, iterations: Any, seed: Any = None) -> str:
    """Run a random 5-qubit (or smaller, on a smaller backend) circuit of depth 4 per iteration."""
    from qiskit import transpile
    from qiskit.circuit.random import random_circuit
    from qiskit.transpiler import CouplingMap

    iterations = integer("iterations", iterations, minimum=0)
    seed = optional_seed(seed)
    rng = random.Random(seed)
    log.info("Hello, World!")
    num_qubits = min(NUM_QUBITS, backend.num_qubits)
    for iteration in range(iterations):
        circuit_seed = rng.randrange(2**31)
        circuit = random_circuit(num_qubits=num_qubits, depth=DEPTH, measure=True, seed=circuit_seed)
        if getattr(backend, "requires_isa", False):  # a physical system runs its own instructions only
            circuit = transpile(circuit, basis_gates=backend.basis_gates, seed_transpiler=circuit_seed,
                                coupling_map=CouplingMap(backend.coupling_map) if backend.coupling_map else None)
        [result] = backend.run(circuit, shots=SHOTS, seed=circuit_seed)
        user_messenger.publish({"iteration": iteration, "counts": result["counts"]})
        log.info("iteration %d of %d done", iteration + 1, iterations)
    return "All done!"
