"""Circuits as the devices service receives and returns them: QPY in, checks, CircuitResult out.

Every adapter shares these checks so that a caller gets the same typed error, with the same reason,
whatever backend it picked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from qiskit import QuantumCircuit
from qiskit.result import Result
from qiskit.transpiler import Target
from qruntime.devices.v1 import backend_pb2
from qruntime.encoding import load_circuits_qpy

from qruntime_kit.errors import InvalidArgument

# Instructions that never reach a simulator as operations, so a backend need not list them.
DIRECTIVES = frozenset({"barrier"})


def decode_circuits(data: bytes) -> list[QuantumCircuit]:
    """The circuits of a QPY file; InvalidArgument INVALID_QPY when it is not one."""
    if not data:
        raise InvalidArgument(
            "circuits_qpy is empty; send at least one circuit serialized with QPY",
            reason="INVALID_QPY",
            field_violations=[("circuits_qpy", "must hold at least one circuit in QPY")],
        )
    try:
        return load_circuits_qpy(data)
    except ValueError as err:  # the encoding turns every kind of damage into ValueError
        raise InvalidArgument(
            f"circuits_qpy is not a QPY file of circuits: {err}",
            reason="INVALID_QPY",
            field_violations=[("circuits_qpy", "must be circuits serialized with qiskit.qpy")],
        ) from None


def iter_operation_names(circuit: QuantumCircuit) -> Iterator[str]:
    """Names of every operation in circuit, inside control-flow blocks too."""
    for instruction in circuit.data:
        operation = instruction.operation
        yield operation.name
        for block in getattr(operation, "blocks", ()):
            yield from iter_operation_names(block)


def check_circuits(
    circuits: Sequence[QuantumCircuit], *, shots: int, max_shots: int, max_experiments: int, num_qubits: int
) -> None:
    """Raise InvalidArgument unless the circuits can run as asked on a backend of this size."""
    if not 1 <= shots <= max_shots:
        raise InvalidArgument(
            f"shots must be 1..{max_shots} on this backend, got {shots}",
            reason="INVALID_SHOTS",
            metadata={"shots": str(shots), "max_shots": str(max_shots)},
            field_violations=[("shots", f"must be between 1 and {max_shots}")],
        )
    if not circuits:
        raise InvalidArgument(
            "no circuits to run",
            reason="NO_CIRCUITS",
            field_violations=[("circuits_qpy", "must hold at least one circuit")],
        )
    if len(circuits) > max_experiments:
        raise InvalidArgument(
            f"{len(circuits)} circuits in one run; this backend takes at most {max_experiments}",
            reason="TOO_MANY_CIRCUITS",
            metadata={"circuits": str(len(circuits)), "max_circuits": str(max_experiments)},
            field_violations=[("circuits_qpy", f"must hold at most {max_experiments} circuits")],
        )
    for index, circuit in enumerate(circuits):
        _check_circuit(index, circuit, num_qubits)


def _check_circuit(index: int, circuit: QuantumCircuit, num_qubits: int) -> None:
    where = {"circuit_index": str(index), "circuit_name": circuit.name}
    if circuit.num_qubits > num_qubits:
        raise InvalidArgument(
            f"circuit {index} ({circuit.name}) uses {circuit.num_qubits} qubits; "
            f"this backend has {num_qubits}",
            reason="CIRCUIT_TOO_WIDE",
            metadata={**where, "circuit_qubits": str(circuit.num_qubits), "backend_qubits": str(num_qubits)},
            field_violations=[("circuits_qpy", f"circuit {index} is wider than the backend")],
        )
    if "measure" not in set(iter_operation_names(circuit)):
        raise InvalidArgument(
            f"circuit {index} ({circuit.name}) measures nothing, so it would have no outcomes; "
            "add measurements (e.g. circuit.measure_all())",
            reason="NO_MEASUREMENTS",
            metadata=where,
            field_violations=[("circuits_qpy", f"circuit {index} has no measurements")],
        )
    if circuit.num_parameters:
        names = ", ".join(sorted(p.name for p in circuit.parameters)[:10])
        raise InvalidArgument(
            f"circuit {index} ({circuit.name}) has unbound parameters ({names}); "
            "bind them (circuit.assign_parameters) before running",
            reason="UNBOUND_PARAMETERS",
            metadata=where,
            field_violations=[("circuits_qpy", f"circuit {index} has unbound parameters")],
        )


def check_isa(index: int, circuit: QuantumCircuit, target: Target, backend: str) -> None:
    """Raise InvalidArgument CIRCUIT_NOT_IN_ISA unless every instruction of circuit is one the target
    runs natively on those very qubits (circuit qubit i is the system's qubit i), inside control flow too."""
    found = _outside_isa(circuit, list(range(circuit.num_qubits)), target)
    if found is None:
        return
    name, qubits = found
    native = name in target.operation_names
    why = f"{name} on qubits {qubits} is not coupled there" if native else f"{name} is not a native instruction"
    raise InvalidArgument(
        f"circuit {index} ({circuit.name}) is not in {backend}'s instruction set architecture: {why} "
        f"(native: {', '.join(sorted(target.operation_names))}). Transpile it for the backend first, e.g. "
        f"generate_preset_pass_manager(optimization_level=1, backend=service.backend({backend!r})).run(circuit)",
        reason="CIRCUIT_NOT_IN_ISA",
        metadata={"circuit_index": str(index), "circuit_name": circuit.name, "instruction": name,
                  "qubits": ",".join(map(str, qubits)), "backend": backend},
        field_violations=[("circuits_qpy", f"circuit {index} is not in the backend's ISA; transpile it for it")],
    )


def _outside_isa(circuit: QuantumCircuit, physical: list[int], target: Target) -> tuple[str, tuple[int, ...]] | None:
    """The first (instruction, physical qubits) the target does not run; physical maps circuit's qubits."""
    index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name in DIRECTIVES:
            continue
        qubits = tuple(physical[index[q]] for q in instruction.qubits)
        if not target.instruction_supported(operation.name, qubits):
            return operation.name, qubits
        for block in getattr(operation, "blocks", ()):
            found = _outside_isa(block, list(qubits), target)
            if found is not None:
                return found
    return None


def register_names(circuit: QuantumCircuit) -> list[str]:
    """Classical register names in bitstring order: Qiskit prints the last register first."""
    return [register.name for register in reversed(circuit.cregs)]


def circuit_results(
    result: Result, circuits: Iterable[QuantumCircuit], *, memory: bool
) -> list[backend_pb2.CircuitResult]:
    """One CircuitResult per circuit from a qiskit Result, keys formatted as Qiskit prints them."""
    results = []
    for index, circuit in enumerate(circuits):
        results.append(
            backend_pb2.CircuitResult(
                counts={key: int(n) for key, n in result.get_counts(index).items()},
                memory=list(result.get_memory(index)) if memory else [],
                register_names=register_names(circuit),
            )
        )
    return results
