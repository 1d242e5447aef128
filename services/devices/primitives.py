"""Qiskit's V2 primitives, run by a simulation worker: typed PUBs in, typed results out.

`prepare` decodes and checks every PUB of a PrimitiveInput (qruntime.primitives.v1) for an adapter and
turns it into plain circuits: one per binding for the sampler; for the estimator, one per binding and
measured basis (each group of qubit-wise commuting Pauli terms shares one basis, rotated with rz and sx,
which every system runs natively, and measured only on the qubits the group acts on, so an emulated
system still simulates just the qubits a circuit touches). `Prepared.assemble` turns the backend's
results back into the primitive's result. Every refusal is INVALID_ARGUMENT naming the PUB
(metadata "pub", a field violation on e.g. "sampler.pubs[1].parameter_values").

This runs only in a worker: decoding user circuits (QASM, QPY) is never done in a service process.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.primitives.containers import BitArray
from qruntime.devices.v1 import backend_pb2
from qruntime.encoding import load_circuits_qpy
from qruntime.primitives.v1 import primitives_pb2 as pb

from qruntime_kit.errors import InvalidArgument

from .adapters import SIMULATOR
from .sampling import generator, shot_order

DEFAULT_SHOTS = 1024
DEFAULT_PRECISION = 1 / 64  # 4096 shots per basis, as IBM's EstimatorV2
MAX_CIRCUITS = 10_000  # circuits one primitive job may run in all (bindings x bases)
BASIS_REGISTER = "qruntime_basis"
_PAULI = re.compile(r"[IXYZ]+")


class PubError(InvalidArgument):
    """A PUB that cannot run: INVALID_ARGUMENT naming the PUB and the field at fault."""

    def __init__(self, where: str, index: int, field: str, message: str, reason: str, **metadata: str) -> None:
        path = f"{where}.pubs[{index}]" + (f".{field}" if field else "")
        super().__init__(f"{where} PUB {index}: {message}", reason=reason,
                         metadata={"pub": str(index), "field": path, **metadata},
                         field_violations=[(path, message)])


@dataclasses.dataclass
class Prepared:
    """The circuits a primitive job runs, in batches of one shot count, and how to read their results."""

    batches: list[tuple[int, list[QuantumCircuit]]]
    memory: bool  # whether the batches must return per-shot memory (the sampler's bits)
    assemble: Callable[[list[list[backend_pb2.CircuitResult]], str, float], pb.PrimitiveResult]

    @property
    def circuits(self) -> list[QuantumCircuit]:
        return [c for _, circuits in self.batches for c in circuits]


def qpy_circuit(data: bytes) -> QuantumCircuit:
    """The one circuit of a PUB's QPY bytes; ValueError when they are not that."""
    circuits = load_circuits_qpy(data)
    if len(circuits) != 1:
        raise ValueError(f"the QPY file holds {len(circuits)} circuits; a PUB has one")
    return circuits[0]


def bare_qpy_circuit(data: bytes) -> QuantumCircuit:
    """qpy_circuit without its final measurements (what the estimator measures)."""
    return qpy_circuit(data).remove_final_measurements(inplace=False)


# decode(data, how): how(data), or what it gave for the same data before (the worker's cache, decoded.py).
Decoder = Callable[[bytes, Callable[[bytes], QuantumCircuit]], QuantumCircuit]


def uncached(data: bytes, how: Callable[[bytes], QuantumCircuit]) -> QuantumCircuit:
    return how(data)


def decode_circuit(circuit: pb.Circuit, where: str, index: int, decode_qpy: Decoder = uncached, *,
                   bare: bool = False) -> QuantumCircuit:
    """The PUB's circuit from OpenQASM 3, OpenQASM 2 or QPY (through decode_qpy), without its final
    measurements when bare; PubError when it is none of them. The caller must not change it."""
    kind = circuit.WhichOneof("source")
    try:
        if kind == "qasm3":
            import qiskit.qasm3  # needs qiskit_qasm3_import

            parsed = qiskit.qasm3.loads(circuit.qasm3)
            return parsed.remove_final_measurements(inplace=False) if bare else parsed
        if kind == "qasm2":
            import qiskit.qasm2

            parsed = qiskit.qasm2.loads(circuit.qasm2, custom_instructions=qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
            return parsed.remove_final_measurements(inplace=False) if bare else parsed
        if kind == "qpy":
            return decode_qpy(circuit.qpy, bare_qpy_circuit if bare else qpy_circuit)
    except Exception as err:  # noqa: BLE001 - each parser raises its own kinds, all the input's fault
        what = {"qasm3": "OpenQASM 3", "qasm2": "OpenQASM 2", "qpy": "QPY"}[kind]
        text = " ".join(str(err).split())[:500] or type(err).__name__
        if kind == "qpy":
            raise PubError(where, index, "circuit.qpy", f"the circuit is not valid QPY: {text}",
                           "INVALID_QPY") from None
        raise PubError(where, index, f"circuit.{kind}", f"the circuit is not valid {what}: {text}",
                       "INVALID_QASM") from None
    raise PubError(where, index, "circuit", "no circuit: set circuit.qasm3, circuit.qasm2 or circuit.qpy",
                   "NO_CIRCUIT")


def _tensor(tensor: pb.Tensor, where: str, index: int, field: str) -> np.ndarray:
    shape = tuple(tensor.shape)
    if any(n < 1 for n in shape) and not (shape and shape[-1] == 0 and field == "parameter_values.values"):
        raise PubError(where, index, field, f"shape {list(shape)} has a dimension below 1", "INVALID_TENSOR")
    if math.prod(shape) != len(tensor.values):
        raise PubError(where, index, field, f"shape {list(shape)} holds {math.prod(shape)} values, "
                       f"{len(tensor.values)} were given", "INVALID_TENSOR")
    values = np.asarray(tensor.values, dtype=float).reshape(shape)
    if not np.all(np.isfinite(values)):
        raise PubError(where, index, field, "holds a value that is not finite", "INVALID_TENSOR")
    return values


def _bindings(circuit: QuantumCircuit, values: pb.BindingsArray, where: str, index: int,
              has_values: bool) -> tuple[tuple[int, ...], list[QuantumCircuit]]:
    """(binding shape, the circuit bound for each binding in row-major order)."""
    names = list(values.parameter_names)
    params = {p.name: p for p in circuit.parameters}
    if not has_values:
        if params:
            listed = ", ".join(sorted(params)[:10])
            raise PubError(where, index, "parameter_values", f"the circuit has parameters ({listed}) and no "
                           "values were given for them", "UNBOUND_PARAMETERS")
        return (), [circuit]
    if len(set(names)) != len(names) or set(names) != set(params):
        missing, unknown = sorted(set(params) - set(names)), sorted(set(names) - set(params))
        why = "; ".join(filter(None, [missing and f"no values for {', '.join(missing[:10])}",
                                      unknown and f"the circuit has no parameter {', '.join(unknown[:10])}",
                                      len(set(names)) != len(names) and "a name is repeated"]))
        field = "parameter_values.parameter_names"
        if missing and not unknown:
            raise PubError(where, index, field, f"no values for the circuit's parameters: {why}", "UNBOUND_PARAMETERS")
        raise PubError(where, index, field, f"the names must be exactly the circuit's parameters: {why}",
                       "PARAMETERS_MISMATCH")
    array = _tensor(values.values, where, index, "parameter_values.values")
    if array.ndim == 0 or array.shape[-1] != len(names):
        raise PubError(where, index, "parameter_values.values", f"its last dimension must be the {len(names)} "
                       f"parameters, its shape is {list(array.shape)}", "INVALID_TENSOR")
    shape = array.shape[:-1]
    if math.prod(shape) > MAX_CIRCUITS:  # before binding them all
        raise PubError(where, index, "parameter_values.values", f"{math.prod(shape)} bindings; a job runs at most "
                       f"{MAX_CIRCUITS} circuits", "TOO_MANY_CIRCUITS")
    flat = array.reshape(-1, len(names)) if names else np.zeros((math.prod(shape), 0))
    order = [params[n] for n in names]
    bound = [circuit.assign_parameters(dict(zip(order, row, strict=True))) if names else circuit for row in flat]
    return shape, bound


def _check_on_backend(adapter: Any, circuits: Sequence[QuantumCircuit], shots: int, where: str, index: int,
                      shots_field: str) -> None:
    """The adapter's own checks (shots, width, measurements, ISA), refusals renamed to the PUB. They run
    in batches of the backend's most circuits per run, as the circuits will."""
    chunk = adapter.configuration().max_experiments or len(circuits)
    try:
        for start in range(0, len(circuits), chunk):
            adapter.validate(circuits[start:start + chunk], shots)
    except InvalidArgument as err:
        field = shots_field if err.reason == "INVALID_SHOTS" else "circuit"
        message = err.message.replace("circuit 0 ", "the circuit ") if len(circuits) == 1 else err.message
        kept = {k: v for k, v in err.metadata.items() if k not in {"circuit_index", "circuit_name"}}
        raise PubError(where, index, field, message, err.reason, **kept) from None


def prepare(primitive: pb.PrimitiveInput, adapter: Any, decode_qpy: Decoder = uncached) -> Prepared:
    """Decode (QPY circuits with decode_qpy) and check every PUB for the adapter; the circuits to run
    and how to assemble the result. The decoded circuits are not changed (decode_qpy may keep them)."""
    kind = primitive.WhichOneof("primitive")
    if kind == "sampler":
        return _prepare_sampler(primitive.sampler, adapter, decode_qpy)
    if kind == "estimator":
        return _prepare_estimator(primitive.estimator, adapter, decode_qpy)
    raise InvalidArgument("the primitive input holds neither sampler nor estimator inputs", reason="NO_PUBS",
                          field_violations=[("primitive", "set sampler or estimator")])


def _no_pubs(where: str) -> InvalidArgument:
    return InvalidArgument(f"{where} has no PUBs; give at least one", reason="NO_PUBS",
                           field_violations=[(f"{where}.pubs", "at least one PUB")])


def _too_many(where: str, count: int) -> InvalidArgument:
    return InvalidArgument(f"the {where} job would run {count} circuits; at most {MAX_CIRCUITS}",
                           reason="TOO_MANY_CIRCUITS", metadata={"circuits": str(count)},
                           field_violations=[(f"{where}.pubs", f"at most {MAX_CIRCUITS} circuits in all")])


def _batches(pub_shots: list[int], pub_circuits: list[list[QuantumCircuit]], chunk: int):
    """Circuits grouped by shots (each group at most chunk long), and where each PUB's circuits land."""
    by_shots: dict[int, list[tuple[int, int]]] = {}
    for pub, (shots, circuits) in enumerate(zip(pub_shots, pub_circuits, strict=True)):
        by_shots.setdefault(shots, []).extend((pub, k) for k in range(len(circuits)))
    batches, where = [], {}
    for shots, members in by_shots.items():
        for start in range(0, len(members), chunk):
            part = members[start:start + chunk]
            for position, member in enumerate(part):
                where[member] = (len(batches), position)
            batches.append((shots, [pub_circuits[p][k] for p, k in part]))
    return batches, where


# -- sampler -------------------------------------------------------------------------------------------


def _prepare_sampler(inputs: pb.SamplerInput, adapter: Any, decode_qpy: Decoder) -> Prepared:
    where = "sampler"
    if not inputs.pubs:
        raise _no_pubs(where)
    default = inputs.options.default_shots or DEFAULT_SHOTS
    shapes, shots_of, circuits_of, registers_of = [], [], [], []
    for i, pub in enumerate(inputs.pubs):
        circuit = decode_circuit(pub.circuit, where, i, decode_qpy)
        shots = pub.shots if pub.HasField("shots") else default
        if not circuit.cregs:
            raise PubError(where, i, "circuit", "the circuit has no classical register to sample; measure into "
                           "one (e.g. circuit.measure_all())", "NO_MEASUREMENTS")
        shape, bound = _bindings(circuit, pub.parameter_values, where, i, pub.HasField("parameter_values"))
        _check_on_backend(adapter, bound, shots, where, i, "shots" if pub.HasField("shots") else "")
        shapes.append(shape)
        shots_of.append(shots)
        circuits_of.append(bound)
        registers_of.append([(r.name, r.size) for r in circuit.cregs])
    total = sum(map(len, circuits_of))
    if total > MAX_CIRCUITS:
        raise _too_many(where, total)
    batches, placed = _batches(shots_of, circuits_of, adapter.configuration().max_experiments or 300)
    # A simulator's shots are independent draws, so its counts in a random order (sampling.shot_order, as
    # draw_shots orders memory) are distributed as its per-shot memory: the bits come from the counts,
    # without a string made and parsed back for every shot (a Bell PUB's run in the worker, warm loop:
    # 1,171 -> 972 us).
    # A physical system's per-shot memory is asked for: its order is the order it measured them in.
    per_shot = adapter.kind != SIMULATOR
    rng = generator(inputs.options.seed if inputs.options.HasField("seed") else None)

    def assemble(results: list[list[backend_pb2.CircuitResult]], backend: str, seconds: float) -> pb.PrimitiveResult:
        out = pb.SamplerResult(metadata=pb.JobMetadata(backend=backend, execution_seconds=seconds, version=2))
        for i, (shape, shots, registers) in enumerate(zip(shapes, shots_of, registers_of, strict=True)):
            per_circuit = [results[b][k] for b, k in (placed[(i, n)] for n in range(len(circuits_of[i])))]
            pub = out.pub_results.add(metadata=pb.PubMetadata(shots=shots, circuits=len(per_circuit)))
            for (name, size), packed in zip(registers, register_bits(per_circuit, registers, shots, rng), strict=True):
                pub.registers.add(name=name, bits=pb.BitArray(
                    packed=packed.tobytes(), shape=list(shape), num_shots=shots, num_bits=size))
        return pb.PrimitiveResult(sampler=out)

    return Prepared(batches, per_shot, assemble)


def register_bits(results: Sequence[backend_pb2.CircuitResult], registers: list[tuple[str, int]],
                  shots: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per register (in the circuit's order): its bits packed as Qiskit's BitArray packs them, a uint8
    array [circuits, shots, bytes], from the results' per-shot memory ("c1bits c0bits": the last register
    first), or, for a result without memory, from its counts' shots in an order drawn from rng. Each
    distinct outcome is packed once and copied to its shots."""
    widths = [size for _, size in reversed(registers)]
    length = sum(widths) + len(widths) - 1
    drawn = []  # per result: its outcomes as rows of "0"/"1" bytes, and the row each shot gave (None: in order)
    for result in results:
        if result.memory:  # an outcome a shot
            if len(result.memory) != shots:
                raise ValueError(f"the backend returned {len(result.memory)} memory entries for {shots} shots")
            keys, order = result.memory, None
        else:  # each outcome once, and how many shots gave it
            keys = sorted(result.counts)  # in one order, for a seed's bits to repeat
            times = [result.counts[key] for key in keys]
            if sum(times) != shots:
                raise ValueError(f"the backend counted {sum(times)} shots of {shots}")
            order = shot_order(times, rng)
        if any(len(key) != length for key in keys[:1]):
            raise ValueError(f"the backend returned outcomes of {len(keys[0])} characters for registers of {length}")
        drawn.append((np.frombuffer("".join(keys).encode(), dtype=np.uint8).reshape(len(keys), length), order))
    packed, start = {}, 0
    for (name, _), width in zip(reversed(registers), widths, strict=True):
        per_result = []
        for rows, order in drawn:
            outcomes = BitArray.from_bool_array(rows[:, start:start + width] == ord("1"), order="big").array
            per_result.append(outcomes if order is None else outcomes[order])
        packed[name] = np.stack(per_result)
        start += width + 1
    return [packed[name] for name, _ in registers]


# -- estimator -----------------------------------------------------------------------------------------


def _observables(observables: pb.ObservablesArray, num_qubits: int, where: str, index: int):
    """(shape, per observable: its [(pauli, coeff)] terms)."""
    shape = tuple(observables.shape)
    field = "observables"
    if not observables.observables:
        raise PubError(where, index, field, "no observables; give at least one", "INVALID_OBSERVABLE")
    if any(n < 1 for n in shape) or math.prod(shape) != len(observables.observables):
        raise PubError(where, index, field, f"shape {list(shape)} does not hold the "
                       f"{len(observables.observables)} observables given", "INVALID_TENSOR")
    parsed = []
    for k, observable in enumerate(observables.observables):
        here = f"{field}.observables[{k}]"
        if not observable.paulis or len(observable.paulis) != len(observable.coeffs):
            raise PubError(where, index, here, f"{len(observable.paulis)} Pauli labels and "
                           f"{len(observable.coeffs)} coefficients; give one coefficient per label, at least one",
                           "INVALID_OBSERVABLE")
        for label, coeff in zip(observable.paulis, observable.coeffs, strict=True):
            if not _PAULI.fullmatch(label):
                raise PubError(where, index, here, f"{label[:80]!r} is not a Pauli label of I, X, Y and Z",
                               "INVALID_OBSERVABLE")
            if len(label) != num_qubits:
                raise PubError(where, index, here, f"{label[:80]!r} acts on {len(label)} qubits; the circuit has "
                               f"{num_qubits} (apply the circuit's layout to the observable after transpiling)",
                               "INVALID_OBSERVABLE")
            if not math.isfinite(coeff):
                raise PubError(where, index, here, f"coefficient {coeff} is not finite", "INVALID_OBSERVABLE")
        parsed.append(list(zip(observable.paulis, observable.coeffs, strict=True)))
    return shape, parsed


def _groups(terms: list[tuple[str, float]]) -> list[dict[int, str]]:
    """Qubit-wise commuting groups of the terms' bases ({qubit: letter}), greedily; identities need none."""
    groups: list[dict[int, str]] = []
    for pauli, _ in terms:
        basis = {q: letter for q, letter in enumerate(reversed(pauli)) if letter != "I"}
        if not basis:
            continue
        for group in groups:
            if all(group.get(q, letter) == letter for q, letter in basis.items()):
                group.update(basis)
                break
        else:
            groups.append(dict(basis))
    return groups


def basis_circuit(circuit: QuantumCircuit, basis: dict[int, str], flipped: Sequence[int] = ()) -> QuantumCircuit:
    """circuit (final measurements removed) rotated so Z measures each qubit's letter, measured into
    BASIS_REGISTER on the basis' qubits (bit j: the j-th of them in increasing order). The rotations
    are rz and sx, native to every system: X: rz(pi/2) sx rz(pi/2) (H); Y: sx (H Sdg, up to an rz that
    the measurement does not see). The flipped qubits get an x just before their measurement (a
    twirled readout: the reader undoes it on the bits)."""
    rotated = circuit.copy()
    qubits = sorted(basis)
    register = ClassicalRegister(len(qubits), BASIS_REGISTER)
    rotated.add_register(register)
    for q in qubits:
        if basis[q] == "X":
            rotated.rz(math.pi / 2, q)
            rotated.sx(q)
            rotated.rz(math.pi / 2, q)
        elif basis[q] == "Y":
            rotated.sx(q)
    for q in flipped:
        rotated.x(q)
    rotated.measure(qubits, register)
    return rotated


def _outcomes(result: backend_pb2.CircuitResult, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The basis register's outcomes as (bits [outcomes, width], bit j for the j-th measured qubit; counts)."""
    position = list(result.register_names).index(BASIS_REGISTER) if result.register_names else 0
    keys, counts = [], []
    for key, count in result.counts.items():
        bits = key.split(" ")[position] if " " in key else key
        keys.append([c == "1" for c in reversed(bits)])
        counts.append(count)
    return np.array(keys, dtype=bool).reshape(len(keys), width), np.array(counts, dtype=float)


# A measured basis (or a readout calibration): its circuits, each with the qubits' readout flips to undo.
Variants = list[tuple[int, np.ndarray]]


class _Circuits:
    """One PUB's circuits to run: every measured basis once, as one circuit or, with twirled readout,
    TWIRLS circuits of random readout flips (and a calibration of those flips on |0...0>, per set of
    measured qubits)."""

    def __init__(self, where: str, index: int, twirls: int, rng: np.random.Generator) -> None:
        self.where, self.index, self.twirls, self.rng = where, index, twirls, rng
        self.circuits: list[QuantumCircuit] = []
        self._known: dict[Any, Variants] = {}

    def measure(self, key: Any, circuit: QuantumCircuit, basis: dict[int, str]) -> Variants:
        if key not in self._known:
            if len(self.circuits) + self.twirls > MAX_CIRCUITS:
                raise PubError(self.where, self.index, "observables", f"more than {MAX_CIRCUITS} circuits to run "
                               "(bindings times groups of commuting terms)", "TOO_MANY_CIRCUITS")
            qubits, variants = sorted(basis), []
            for _ in range(self.twirls):
                flips = self.rng.random(len(qubits)) < 0.5 if self.twirls > 1 else np.zeros(len(qubits), dtype=bool)
                variants.append((len(self.circuits), flips))
                flipped = [q for q, flip in zip(qubits, flips, strict=True) if flip]
                self.circuits.append(basis_circuit(circuit, basis, flipped))
            self._known[key] = variants
        return self._known[key]


@dataclasses.dataclass
class _Term:
    """Terms of an observable read from one measured basis."""

    variants: Variants
    members: list[tuple[list[int], float]]  # (columns of the basis' qubits the Pauli acts on, coefficient)
    calibration: Variants | None  # the readout calibration of the same qubits, when mitigated


TWIRLS = 16  # random readout flips per measured basis, with resilience_level 1


def _prepare_estimator(inputs: pb.EstimatorInput, adapter: Any, decode_qpy: Decoder) -> Prepared:
    where = "estimator"
    if not inputs.pubs:
        raise _no_pubs(where)
    options = inputs.options
    if options.resilience_level not in (0, 1):
        raise InvalidArgument(f"resilience_level must be 0 or 1, got {options.resilience_level}",
                              reason="INVALID_OPTIONS", metadata={"option": "resilience_level"},
                              field_violations=[(f"{where}.options.resilience_level", "0 (none) or 1 (TREX)")])
    twirls = TWIRLS if options.resilience_level == 1 else 1
    rng = generator(options.seed if options.HasField("seed") else None)
    default = options.default_precision or DEFAULT_PRECISION
    max_shots = adapter.configuration().max_shots
    plans, shots_of, circuits_of, precision_of = [], [], [], []
    for i, pub in enumerate(inputs.pubs):
        precision = pub.precision if pub.HasField("precision") else default
        field = "precision" if pub.HasField("precision") else ""
        if not (math.isfinite(precision) and precision > 0):
            raise PubError(where, i, field, f"precision must be a positive number, got {precision}",
                           "INVALID_PRECISION")
        shots = math.ceil(1 / precision**2)
        if options.default_shots and not pub.HasField("precision"):  # IBM's default_shots: it overrides
            shots, precision = options.default_shots, 1 / math.sqrt(max(1, options.default_shots))
            if not 1 <= shots <= max_shots:
                raise InvalidArgument(f"default_shots must be 1..{max_shots} on this backend, got {shots}",
                                      reason="INVALID_OPTIONS", metadata={"option": "default_shots"},
                                      field_violations=[(f"{where}.options.default_shots", f"1..{max_shots}")])
        if shots > max_shots:
            raise PubError(where, i, field, f"precision {precision} needs {shots} shots per basis; this backend "
                           f"takes at most {max_shots} (precision >= {1 / math.sqrt(max_shots):.6g})",
                           "INVALID_PRECISION")
        shots = math.ceil(shots / twirls)  # per circuit: a basis' shots are shared by its twirls
        bare = decode_circuit(pub.circuit, where, i, decode_qpy, bare=True)
        obs_shape, observables = _observables(pub.observables, bare.num_qubits, where, i)
        bind_shape, bound = _bindings(bare, pub.parameter_values, where, i, pub.HasField("parameter_values"))
        try:
            shape = np.broadcast_shapes(obs_shape, bind_shape)
        except ValueError:
            raise PubError(where, i, "observables", f"the observables' shape {list(obs_shape)} and the parameter "
                           f"values' binding shape {list(bind_shape)} do not broadcast", "SHAPES_DO_NOT_BROADCAST",
                           observables_shape=str(list(obs_shape)), bindings_shape=str(list(bind_shape))) from None
        obs_index = np.broadcast_to(np.arange(len(observables)).reshape(obs_shape), shape).ravel()
        bind_index = np.broadcast_to(np.arange(len(bound)).reshape(bind_shape), shape).ravel()
        made = _Circuits(where, i, twirls, rng)
        blank = QuantumCircuit(bare.num_qubits)  # the calibrations' |0...0>
        # The terms of every observable read on one binding share its measured bases (the estimator
        # program's ["ZZ", "ZI"] is one circuit, as one observable's terms are).
        on_binding: dict[int, list[tuple[str, float]]] = {}
        for o, b in zip(obs_index, bind_index, strict=True):
            on_binding.setdefault(int(b), []).extend(observables[o])
        groups_of = {b: _groups(terms) for b, terms in on_binding.items()}
        plan = []  # per element: (the identity terms' sum, [_Term])
        for o, b in zip(obs_index, bind_index, strict=True):
            terms, read = observables[o], []
            counted: set[int] = set()  # a term two merged groups could both read is counted once
            for group in groups_of[int(b)]:
                qubits = sorted(group)
                column = {q: j for j, q in enumerate(qubits)}
                members = []
                for t, (pauli, coeff) in enumerate(terms):
                    acts = {q: letter for q, letter in enumerate(reversed(pauli)) if letter != "I"}
                    if acts and t not in counted and all(group.get(q) == letter for q, letter in acts.items()):
                        counted.add(t)
                        members.append(([column[q] for q in sorted(acts)], coeff))
                if not members:  # the group is another observable's
                    continue
                variants = made.measure((int(b), tuple(sorted(group.items()))), bound[b], group)
                calibration = (made.measure(("calibration", tuple(qubits)), blank, dict.fromkeys(qubits, "Z"))
                               if twirls > 1 else None)
                read.append(_Term(variants, members, calibration))
            plan.append((sum(c for p, c in terms if set(p) == {"I"}), read))
        # Only identities: nothing to measure, but the circuit must still be one the backend runs.
        checked = made.circuits or ([basis_circuit(bound[0], {0: "Z"})] if bare.num_qubits else [])
        if checked:
            _check_on_backend(adapter, checked, shots, where, i, field)
        plans.append((shape, plan))
        shots_of.append(shots)
        circuits_of.append(made.circuits)
        precision_of.append(precision)
    total = sum(map(len, circuits_of))
    if total > MAX_CIRCUITS:
        raise _too_many(where, total)
    batches, placed = _batches(shots_of, circuits_of, adapter.configuration().max_experiments or 300)

    def assemble(results: list[list[backend_pb2.CircuitResult]], backend: str, seconds: float) -> pb.PrimitiveResult:
        out = pb.EstimatorResult(metadata=pb.JobMetadata(backend=backend, execution_seconds=seconds, version=2))
        for i, (shape, plan) in enumerate(plans):

            def read(variants: Variants, columns: list[int], pub: int = i) -> tuple[float, float]:
                """(<Z...Z> on the columns, its variance), over all of a basis' variants, flips undone."""
                signed = total = 0.0
                for circuit, flips in variants:
                    b, k = placed[(pub, circuit)]
                    bits, counts = _outcomes(results[b][k], len(flips))
                    signs = 1 - 2 * ((bits ^ flips)[:, columns].sum(axis=1) % 2)
                    signed, total = signed + float(signs @ counts), total + float(counts.sum())
                mean = signed / total if total else 0.0
                return mean, max(0.0, 1.0 - mean**2) / (total or 1)

            evs, variances = [], []
            for identity, terms in plan:
                value, variance = identity, 0.0
                for term in terms:
                    for columns, coeff in term.members:
                        mean, var = read(term.variants, columns)
                        if term.calibration is not None:  # twirled readout: divide by the readout's fidelity
                            fidelity, fidelity_var = read(term.calibration, columns)
                            if fidelity > MIN_FIDELITY:
                                mean, var = mean / fidelity, (var + (mean / fidelity) ** 2 * fidelity_var) / fidelity**2
                        value += coeff * mean
                        variance += coeff**2 * var
                evs.append(value)
                variances.append(variance)
            out.pub_results.add(
                evs=pb.Tensor(shape=list(shape), values=evs),
                stds=pb.Tensor(shape=list(shape), values=[math.sqrt(v) for v in variances]),
                metadata=pb.PubMetadata(shots=shots_of[i] * twirls, target_precision=precision_of[i],
                                        circuits=len(circuits_of[i])),
            )
        return pb.PrimitiveResult(estimator=out)

    return Prepared(batches, False, assemble)


MIN_FIDELITY = 0.1  # below this, a calibrated readout fidelity is too noisy to divide by; the value stays raw
