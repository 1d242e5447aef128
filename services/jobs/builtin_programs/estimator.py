"""estimator: the expectation value of an observable on the state each circuit prepares.

An observable is a Pauli string ("ZZ", Qiskit's order: the rightmost letter acts on qubit 0) or a
list of [pauli, coeff] pairs, one per circuit or one for all. Each Pauli term is measured on the
backend: the circuit's final measurements are stripped, each qubit is rotated into the term's basis
(H for X, Sdg then H for Y) and measured. Terms of one circuit that need the same rotations share
one measured circuit, and every measured circuit goes to the backend in ONE call.

The result holds "values", "stds" (standard errors, sqrt(sum_i c_i^2 (1 - <P_i>^2) / shots),
treating the terms as independent) and "metadata" ({"shots": n}), one entry per circuit.
"""

from __future__ import annotations

import cmath
import math
import re
from typing import TYPE_CHECKING, Any

from .common import (
    CIRCUITS,
    PARAMETER_VALUES,
    SEED,
    THREE_HOURS,
    InvalidInputError,
    as_list,
    circuits_to_run,
    optional_seed,
    positive_int,
    program_logger,
)
from .entry import CatalogueEntry, Input

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

log = program_logger("estimator")
DEFAULT_SHOTS = 4096

ENTRY = CatalogueEntry(
    id="estimator",
    description=(
        "Expectation value estimator: estimates the expectation value of each observable on the "
        "state each given circuit prepares, executed on the target backend."
    ),
    results='{"values", "stds", "metadata"}, one entry per (circuit, observable) pair.',
    inputs={
        "circuits": Input("CIRCUITS", CIRCUITS),
        "observables": Input("ARRAY", "Observables to estimate, one per circuit: a Pauli string such as \"ZZ\", "
                             "or a list of [pauli, coeff] pairs such as [[\"ZZ\", 1.0], [\"XI\", 0.5]]."),
        "parameter_values": Input("ARRAY", PARAMETER_VALUES),
        "shots": Input("INTEGER", "Shots per circuit; the estimator's default when not given."),
        "seed": Input("INTEGER", SEED),
    },
    max_execution_seconds=THREE_HOURS,
    typed_inputs="qruntime.primitives.v1.EstimatorInput",
)
_PAULI = re.compile(r"[IXYZ]+")
Terms = list[tuple[str, float]]


def main(
    backend: Any,
    user_messenger: Any,
    circuits: Any,
    observables: Any,
    parameter_values: Any = None,
    shots: Any = DEFAULT_SHOTS,
    seed: Any = None,
) -> dict[str, list[Any]]:
    """Estimate <observable> for each (circuit, observable) pair, broadcasting a lone circuit or observable."""
    runs = circuits_to_run(circuits, parameter_values)
    terms = parse_observables(observables)
    if len(runs) == 1 and len(terms) > 1:
        runs = runs * len(terms)
    elif len(terms) == 1 and len(runs) > 1:
        terms = terms * len(runs)
    if len(runs) != len(terms):
        raise InvalidInputError(f"{len(terms)} observables for {len(runs)} circuits; give one per circuit")
    shots = positive_int("shots", shots)

    measured: list[QuantumCircuit] = []
    bases: dict[tuple[int, str], int] = {}  # (circuit, basis) -> index into measured: bases are shared
    plans: list[list[tuple[int, str, float]]] = []  # per circuit: (index into measured, pauli, coeff)
    for k, (circuit, observable) in enumerate(zip(runs, terms, strict=True)):
        plan = []
        for pauli, coeff in observable:
            if len(pauli) != circuit.num_qubits:
                raise InvalidInputError(
                    f"observable {k} acts on {len(pauli)} qubits, its circuit has {circuit.num_qubits}"
                )
            key = (id(circuit), pauli.replace("I", "Z"))  # an identity factor is read in any basis
            if key not in bases:
                bases[key] = len(measured)
                measured.append(basis_circuit(circuit, key[1]))
            plan.append((bases[key], pauli, coeff))
        plans.append(plan)

    log.info("estimating %d observable(s) with %d circuit(s), %d shots each, on %s",
             len(plans), len(measured), shots, backend.name)
    results = backend.run(measured, shots=shots, seed=optional_seed(seed))
    values, stds = [], []
    for plan in plans:
        value = variance = 0.0
        for index, pauli, coeff in plan:
            expectation = pauli_expectation(results[index], pauli)
            value += coeff * expectation
            variance += coeff**2 * max(0.0, 1.0 - expectation**2)
        values.append(value)
        stds.append(math.sqrt(variance / shots))
    return {"values": values, "stds": stds, "metadata": [{"shots": shots} for _ in plans]}


MEASURE_REGISTER = "estimator_basis"


def basis_circuit(circuit: QuantumCircuit, basis: str) -> QuantumCircuit:
    """The circuit without its final measurements, rotated into basis and measured into MEASURE_REGISTER."""
    from qiskit import ClassicalRegister

    rotated = circuit.remove_final_measurements(inplace=False)
    if any(reg.name == MEASURE_REGISTER for reg in rotated.cregs):
        raise InvalidInputError(f"circuits must not have a classical register named {MEASURE_REGISTER!r}")
    register = ClassicalRegister(circuit.num_qubits, MEASURE_REGISTER)
    rotated.add_register(register)
    for qubit, letter in enumerate(reversed(basis)):
        if letter == "X":
            rotated.h(qubit)
        elif letter == "Y":
            rotated.sdg(qubit)
            rotated.h(qubit)
    rotated.measure(range(circuit.num_qubits), register)
    return rotated


def pauli_expectation(result: dict[str, Any], pauli: str) -> float:
    """<pauli> from the counts of its basis circuit: the mean of (-1)^(parity of the measured bits it acts on)."""
    position = result["register_names"].index(MEASURE_REGISTER) if result.get("register_names") else 0
    acts_on = [q for q, letter in enumerate(reversed(pauli)) if letter != "I"]
    total = signed = 0
    for bitstring, count in result["counts"].items():
        bits = bitstring.split(" ")[position] if " " in bitstring else bitstring
        parity = sum(bits[-1 - q] == "1" for q in acts_on) % 2
        signed += -count if parity else count
        total += count
    return signed / total if total else 0.0


def parse_observables(observables: Any) -> list[Terms]:
    """One list of (pauli, coeff) terms per observable given."""
    single = _observable(observables)
    if single is not None:
        return [single]
    items = as_list(observables)
    if not items:
        raise InvalidInputError("observables is empty; give at least one")
    parsed = []
    for k, item in enumerate(items):
        terms = _observable(item)
        if terms is None:
            raise InvalidInputError(
                f"observables[{k}] is not a Pauli string or a list of [pauli, coeff] pairs: {item!r}"
            )
        parsed.append(terms)
    return parsed


def _observable(value: Any) -> Terms | None:
    """The terms of value if it is one observable; None if it is not (it may be a list of them)."""
    if isinstance(value, str):
        return [(_pauli(value), 1.0)]
    if hasattr(value, "to_list") and hasattr(value, "paulis"):  # a qiskit SparsePauliOp, from Python callers
        return [(_pauli(p), _coeff(c)) for p, c in value.to_list()]
    if _is_term(value):
        return [(_pauli(value[0]), _coeff(value[1]))]
    if isinstance(value, list | tuple) and value and all(_is_term(t) for t in value):
        return [(_pauli(p), _coeff(c)) for p, c in value]
    return None


def _is_term(value: Any) -> bool:
    return (
        isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], int | float | complex) and not isinstance(value[1], bool)
    )


def _pauli(label: str) -> str:
    if not _PAULI.fullmatch(label):
        raise InvalidInputError(f"{label!r} is not a Pauli string of the letters I, X, Y and Z")
    return label


def _coeff(value: Any) -> float:
    try:
        number = complex(value)
    except OverflowError:  # a JSON integer too large for a float
        number = complex(math.inf)
    if not cmath.isfinite(number):
        raise InvalidInputError(f"coefficient {value!r} is not a finite number")
    if number.imag:
        raise InvalidInputError(f"coefficient {number} is not real; an observable must be Hermitian")
    return number.real
