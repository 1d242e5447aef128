"""The memory guard: how much memory simulating a circuit needs, and whether it may have it.

A simulator's state has a size known before it runs: a state vector holds 2ⁿ complex amplitudes of
16 bytes, a density matrix or a unitary 4ⁿ, a superoperator 16ⁿ. A circuit whose state cannot fit in
what simulations may use (`simulation_memory_bytes`) is refused before it runs, with the numbers; a
circuit that fits runs in a worker whose hard memory cap (the kernel's) catches any estimate that was
wrong, so a wrong estimate costs that one worker, never the service.

What the estimates follow, from qiskit-aer 0.18's own code (src/controllers/aer_controller.hpp,
src/framework/circuit.hpp):
- Aer drops the qubits that cannot affect a result before it simulates ("truncation"): walking the
  circuit backwards from its measurements (and save instructions), it keeps every instruction that
  touches a qubit already kept. Only those qubits count (simulated_qubits). With control flow we
  count every qubit any instruction touches, which is never fewer.
- `automatic` on an ideal simulator: the stabilizer method when every instruction is Clifford (rz
  only at multiples of π/2), else the state vector. Aer would fall back to other methods when the
  state vector does not fit; we refuse such circuits instead and name simulator_mps in the message.
- `automatic` with a noise model (the emulated physical systems): the density matrix when the
  circuit has fewer than 30 qubits, more shots than 2ⁿ and the density matrix fits, else the state
  vector. Aer may take the stabilizer method where we say state vector (Clifford circuits under
  noise it can treat as Clifford, or gates after the last measurement, which it drops first): so a
  state-vector estimate counts the larger of the two (the tableau is larger below 8 qubits).
- Stabilizer: Aer's own formula, 2n·(16·(n+4)+16) bytes. Extended stabilizer: one such state; Aer
  checks its sum of states against max_memory_mb itself, which the workers set to the same limit.
- Matrix product state: the memory depends on the entanglement the circuit builds, unknowable
  without running it (bond dimension χ up to 2^(n/2)). We assume χ ≤ MPS_ASSUMED_BOND and use Aer's
  formula n·(32χ²+8χ); a circuit that entangles more is stopped by its worker's hard cap and fails
  with SIMULATION_OUT_OF_MEMORY.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence

from qiskit import QuantumCircuit
from qiskit.circuit import CONTROL_FLOW_OP_NAMES, Instruction

from qruntime_kit.errors import InvalidArgument
from qruntime_kit.limits import available_memory

AMPLITUDE_BYTES = 16  # one complex128
MPS_ASSUMED_BOND = 64
WIDEST = 63  # Aer addresses a state's qubits with 64-bit indices
AUTOMATIC, STATEVECTOR, DENSITY_MATRIX = "automatic", "statevector", "density_matrix"
STABILIZER, EXTENDED_STABILIZER, MPS = "stabilizer", "extended_stabilizer", "matrix_product_state"
UNITARY, SUPEROP = "unitary", "superop"
_RESULTS = {"measure"}  # with the save_* instructions: what Aer keeps qubits for


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What simulating one circuit takes."""

    method: str  # the simulation method that would run it; "" on real hardware
    qubits: int  # the qubits the simulation holds (after Aer drops those that affect no result)
    bytes: int  # the memory its state needs


def state_bytes(method: str, qubits: int) -> int:
    """Bytes the state of `qubits` qubits takes under method (automatic: the state vector)."""
    n = qubits
    if method in (STATEVECTOR, AUTOMATIC):
        return AMPLITUDE_BYTES << n
    if method in (DENSITY_MATRIX, UNITARY):
        return AMPLITUDE_BYTES << (2 * n)
    if method == SUPEROP:
        return AMPLITUDE_BYTES << (4 * n)
    if method in (STABILIZER, EXTENDED_STABILIZER):
        return 2 * n * (16 * (n + 4) + 16)
    if method == MPS:
        bond = min(MPS_ASSUMED_BOND, 1 << (n // 2))
        return n * (32 * bond * bond + 8 * bond)
    raise ValueError(f"unknown simulation method {method!r}")


def most_qubits(method: str, limit: int, cap: int) -> int:
    """The most qubits whose state fits in limit bytes under method, at most cap."""
    low, high = 0, cap  # state_bytes grows with the qubits: bisect for the last n that fits
    while low < high:
        middle = (low + high + 1) // 2
        if state_bytes(method, middle) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def estimate(circuit: QuantumCircuit, method: str, *, shots: int, limit: int, noisy: bool = False) -> Estimate:
    """The memory simulating circuit takes under method, choosing for `automatic` as Aer would
    (see the module's notes); limit is the memory a simulation may use (0: unlimited)."""
    qubits = simulated_qubits(circuit)
    if method != AUTOMATIC:
        return Estimate(method, qubits, state_bytes(method, qubits))
    chosen = _automatic_method(circuit, qubits, shots=shots, limit=limit, noisy=noisy)
    size = state_bytes(chosen, qubits)
    if chosen == STATEVECTOR:  # Aer may still find the circuit Clifford, whose tableau is the larger below 8 qubits
        size = max(size, state_bytes(STABILIZER, qubits))
    return Estimate(chosen, qubits, size)


def _automatic_method(circuit: QuantumCircuit, qubits: int, *, shots: int, limit: int, noisy: bool) -> str:
    if noisy:
        density = state_bytes(DENSITY_MATRIX, qubits)
        if qubits < 30 and shots > (1 << qubits) and (not limit or density <= limit):
            return DENSITY_MATRIX
        return STATEVECTOR
    return STABILIZER if is_clifford(circuit) else STATEVECTOR


def simulated_qubits(circuit: QuantumCircuit) -> int:
    """How many qubits Aer simulates for circuit: those in the backward light cone of its results."""
    index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    touched = lambda instruction: {index[q] for q in instruction.qubits}  # noqa: E731
    if any(i.operation.name in CONTROL_FLOW_OP_NAMES for i in circuit.data):
        return len(set().union(*(touched(i) for i in circuit.data if i.operation.name != "barrier")))
    kept: set[int] = set()
    for instruction in reversed(circuit.data):
        name = instruction.operation.name
        if name == "barrier":
            continue
        qubits = touched(instruction)
        if name in _RESULTS or name.startswith("save_") or qubits & kept:
            kept |= qubits
    return len(kept)


def is_clifford(circuit: QuantumCircuit) -> bool:
    """Whether Aer's stabilizer method accepts every instruction (rz only at multiples of π/2)."""
    allowed = _stabilizer_instructions()
    for operation in _operations(circuit):
        if operation.name == "barrier":
            continue
        if operation.name not in allowed:
            return False
        if operation.name == "rz" and not _multiple_of_half_pi(operation.params[0]):
            return False
    return True


def _operations(circuit: QuantumCircuit) -> Iterator[Instruction]:
    for instruction in circuit.data:
        yield instruction.operation
        for block in getattr(instruction.operation, "blocks", ()):
            yield from _operations(block)


def _multiple_of_half_pi(angle: object) -> bool:
    try:
        quarters = float(angle) * 2 / math.pi
    except (TypeError, ValueError):  # an unbound parameter: the checks refuse it anyway
        return False
    return math.isclose(quarters, round(quarters), rel_tol=0, abs_tol=1e-9)


@functools.cache
def _stabilizer_instructions() -> frozenset[str]:
    from qiskit_aer import AerSimulator

    return frozenset(AerSimulator(method=STABILIZER).operation_names)


def check_fits(circuits: Sequence[QuantumCircuit], estimates: Sequence[Estimate], *, limit: int, backend: str) -> None:
    """Raise InvalidArgument CIRCUIT_NEEDS_TOO_MUCH_MEMORY for the first circuit that cannot fit."""
    for index, (circuit, found) in enumerate(zip(circuits, estimates, strict=True)):
        if found.bytes <= limit:
            continue
        raise InvalidArgument(
            f"circuit {index} ({circuit.name}) needs about {describe_bytes(found.bytes)} to simulate "
            f"({found.qubits} qubits with the {found.method.replace('_', ' ')} method); simulations on "
            f"{backend} may use at most {describe_bytes(limit)}. Use fewer qubits, or a method that needs "
            "less memory: simulator_mps, or the stabilizer method for Clifford circuits",
            reason="CIRCUIT_NEEDS_TOO_MUCH_MEMORY",
            metadata={
                "circuit_index": index, "circuit_name": circuit.name, "simulated_qubits": found.qubits,
                "method": found.method, "estimated_bytes": found.bytes, "limit_bytes": limit, "backend": backend,
            },
            field_violations=[("circuits_qpy", f"circuit {index} needs more memory than simulations may use")],
        )


def describe_bytes(size: int) -> str:
    """1.5 GiB, 512 MiB, 16 KiB, 40 B; sizes past an exbibyte as a power of two."""
    if size >= 1 << 70:
        return f"2^{size.bit_length() - 1} B"
    for unit, shift in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.3g} {unit}"
    return f"{size} B"


def default_simulation_memory() -> int:
    """What all simulations may use when the settings leave it at 0: half the memory available now.
    Half, because a worker's hard cap is this plus its interpreter: should one simulation's estimate
    be wrong while others hold their share, all of them together still stay within what was free."""
    return available_memory() // 2
