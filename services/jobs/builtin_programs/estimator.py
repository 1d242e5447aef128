"""estimator: the expectation value of an observable on the state each circuit prepares.

An observable is a Pauli string ("ZZ", Qiskit's order: the rightmost letter acts on qubit 0) or a
list of [pauli, coeff] pairs, one per circuit or one for all. The circuits go to the backend in ONE
call as the V2 estimator's PUBs (RunCircuitsRequest.primitive): the devices worker strips each
circuit's final measurements, binds its parameter values, rotates it into one basis per group of
qubit-wise commuting Pauli terms (the terms of a circuit's observables share them) and measures
each basis once. Nothing here builds a circuit: an iterative program's step sends its unbound
circuit's QPY bytes with the step's values, and the worker, which decoded those bytes at the first
step of the job, binds them (bench/README.md: the VQE of bench_execution).

The result holds "values", "stds" (standard errors, sqrt(sum_i c_i^2 (1 - <P_i>^2) / shots),
treating the terms as independent) and "metadata" ({"shots": n}), one entry per circuit.
"""

from __future__ import annotations

import cmath
import math
import re
from typing import Any

from .common import (
    CIRCUITS,
    PARAMETER_VALUES,
    SEED,
    THREE_HOURS,
    InvalidInputError,
    as_list,
    circuits_and_values,
    optional_seed,
    positive_int,
    program_logger,
)
from .entry import CatalogueEntry, Input

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
    result, measured = estimate(backend, circuits, observables, parameter_values, shots, seed)
    log.info("estimated %d observable(s) from %d measured circuit(s), %d shots each, on %s",
             len(result["values"]), measured, result["metadata"][0]["shots"], backend.name)
    return result


def estimate(
    backend: Any, circuits: Any, observables: Any, parameter_values: Any = None, shots: Any = DEFAULT_SHOTS,
    seed: Any = None,
) -> tuple[dict[str, list[Any]], int]:
    """main's result without its log line, and how many circuits the backend measured."""
    from qruntime.encoding import dump_circuits_qpy
    from qruntime.primitives.v1 import primitives_pb2 as pb

    runs = circuits_and_values(circuits, parameter_values)
    terms = parse_observables(observables)
    if len(runs) == 1 and len(terms) > 1:
        runs = runs * len(terms)
    elif len(terms) == 1 and len(runs) > 1:
        terms = terms * len(runs)
    if len(runs) != len(terms):
        raise InvalidInputError(f"{len(terms)} observables for {len(runs)} circuits; give one per circuit")
    shots = positive_int("shots", shots)
    if shots > (getattr(backend, "max_shots", 0) or shots):
        raise InvalidInputError(f"shots must be at most {backend.max_shots} on {backend.name}, got {shots}")
    seed = optional_seed(seed)
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise InvalidInputError(f"seed must be a 64-bit integer, got {seed}")

    # One PUB per circuit and binding: its observables then share the measured bases.
    request = pb.EstimatorInput(options=pb.EstimatorOptions(default_shots=shots, seed=seed))
    pubs: dict[tuple[int, tuple[float, ...]], int] = {}
    placed = []  # per pair: (PUB, index into its observables)
    for k, ((circuit, values), observable) in enumerate(zip(runs, terms, strict=True)):
        for pauli, _ in observable:
            if len(pauli) != circuit.num_qubits:
                raise InvalidInputError(
                    f"observable {k} acts on {len(pauli)} qubits, its circuit has {circuit.num_qubits}"
                )
        key = (id(circuit), tuple(values))
        if key not in pubs:
            pubs[key] = len(request.pubs)
            # Encoded at every call (a program may change its circuit in place between calls): the
            # same circuit gives the same bytes, which the worker has decoded already.
            pub = request.pubs.add(circuit=pb.Circuit(qpy=dump_circuits_qpy(circuit)))
            if values:
                pub.parameter_values.parameter_names.extend(p.name for p in circuit.parameters)
                pub.parameter_values.values.shape.append(len(values))
                pub.parameter_values.values.values.extend(values)
        pub = request.pubs[pubs[key]]
        placed.append((pubs[key], len(pub.observables.observables)))
        pub.observables.observables.add(paulis=[p for p, _ in observable], coeffs=[c for _, c in observable])
    for pub in request.pubs:
        pub.observables.shape.append(len(pub.observables.observables))

    result = backend.run_primitive(pb.PrimitiveInput(estimator=request)).estimator
    values = [result.pub_results[pub].evs.values[i] for pub, i in placed]
    stds = [result.pub_results[pub].stds.values[i] for pub, i in placed]
    measured = sum(p.metadata.circuits for p in result.pub_results)
    return {"values": values, "stds": stds, "metadata": [{"shots": shots} for _ in placed]}, measured


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
