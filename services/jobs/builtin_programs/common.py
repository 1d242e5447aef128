"""What the built-in programs share: their logger, the error for unusable inputs, and input helpers.

A built-in program is a function main(backend, user_messenger, **inputs). It logs through
program_logger(...) (the runner stores those lines as the job's logs), raises InvalidInputError when
inputs of the declared JSON types still make no sense (the job ends ERROR with reason INVALID_INPUT),
and returns a value qruntime.encoding can encode.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Qiskit is imported when a program runs, not when its catalogue entry is read
    from qiskit import QuantumCircuit

PROGRAM_LOGGER = "qruntime.program"
THREE_HOURS = 3 * 60 * 60

# Input descriptions the sampler and estimator share (their catalogue entries).
CIRCUITS = (
    "Quantum circuits to run: one circuit or an array of them, each encoded as "
    '{"__type__": "QuantumCircuit", "__value__": <base64 of its QPY bytes>}.'
)
PARAMETER_VALUES = (
    "Values to bind to each circuit's parameters: one array of numbers per circuit (or per entry of "
    "circuit_indices), in the order of circuit.parameters."
)
SEED = "Seed of the simulator's random number generator, for reproducible results."


class InvalidInputError(ValueError):
    """The inputs have their declared types but the program cannot use them."""


def program_logger(name: str) -> logging.Logger:
    """The logger a built-in program logs to; its lines become the job's logs."""
    return logging.getLogger(f"{PROGRAM_LOGGER}.{name}")


def as_list(value: Any) -> list[Any]:
    """A list from a list, tuple or numpy array; [value] from anything else."""
    from qiskit import QuantumCircuit

    if hasattr(value, "tolist") and not isinstance(value, QuantumCircuit):
        value = value.tolist()
    return list(value) if isinstance(value, list | tuple) else [value]


def circuits_to_run(
    circuits: Any, parameter_values: Any = None, circuit_indices: Any = None
) -> list[QuantumCircuit]:
    """The circuits to run, in order: circuits[i] for each i of circuit_indices (all when None),
    with the matching entry of parameter_values bound to its parameters."""
    return [circuit.assign_parameters(values) if values else circuit
            for circuit, values in circuits_and_values(circuits, parameter_values, circuit_indices)]


def circuits_and_values(
    circuits: Any, parameter_values: Any = None, circuit_indices: Any = None
) -> list[tuple[QuantumCircuit, list[float]]]:
    """As circuits_to_run, each circuit still unbound with the values for its parameters (in the order
    of circuit.parameters): for a caller that has the backend bind them."""
    from qiskit import QuantumCircuit

    circuits = as_list(circuits)
    for i, circuit in enumerate(circuits):
        if not isinstance(circuit, QuantumCircuit):
            raise InvalidInputError(f"circuits[{i}] is a {type(circuit).__name__}, not a QuantumCircuit")
    if not circuits:
        raise InvalidInputError("circuits is empty; give at least one circuit")
    indices = list(range(len(circuits))) if circuit_indices is None else as_list(circuit_indices)
    for i in indices:
        if not _is_whole(i) or not 0 <= i < len(circuits):
            raise InvalidInputError(f"circuit_indices holds {i!r}, not an index into the {len(circuits)} circuits")
    selected = [circuits[int(i)] for i in indices]
    values = _parameter_values(parameter_values, len(selected))
    for k, (circuit, vals) in enumerate(zip(selected, values, strict=True)):
        if len(vals) != circuit.num_parameters:
            raise InvalidInputError(
                f"circuit {k} has {circuit.num_parameters} parameters but {len(vals)} values were given"
            )
    return list(zip(selected, values, strict=True))


def _parameter_values(parameter_values: Any, count: int) -> list[list[float]]:
    if parameter_values is None:
        return [[] for _ in range(count)]
    values = as_list(parameter_values)
    if count == 1 and values and all(_is_real(v) for v in values):  # the flat values of one circuit
        values = [values]
    if not all(isinstance(v, list | tuple) or hasattr(v, "tolist") for v in values):
        raise InvalidInputError("parameter_values must hold one array of numbers per circuit")
    values = [as_list(v) for v in values]
    if len(values) != count:
        raise InvalidInputError(f"parameter_values has {len(values)} entries for {count} circuits")
    for k, vals in enumerate(values):
        if not all(_is_real(v) and math.isfinite(v) for v in vals):  # an ndarray input may hold nan or inf
            raise InvalidInputError(f"parameter_values[{k}] must be an array of finite numbers")
    return [[float(v) for v in vals] for vals in values]


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """value as an int, at least minimum; InvalidInputError otherwise."""
    if not _is_whole(value) or (minimum is not None and value < minimum):
        kind = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer of at least {minimum}"
        )
        raise InvalidInputError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """value as a positive int; InvalidInputError otherwise."""
    return integer(name, value, minimum=1)


def optional_seed(value: Any) -> int | None:
    """A seed as an int, or None."""
    return None if value is None else integer("seed", value)


def _is_whole(value: Any) -> bool:
    # JSON has one kind of number, so 2.0 counts; float(value) would overflow on JSON's larger integers.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def check_measured(circuits: Sequence[QuantumCircuit]) -> None:
    """InvalidInputError unless every circuit has classical bits to sample."""
    for i, circuit in enumerate(circuits):
        if circuit.num_clbits == 0:
            raise InvalidInputError(f"circuit {i} has no classical bits to sample; add measurements")
