"""Running a circuit transpiled for a large system on only the qubits it touches.

A circuit transpiled for a 127-qubit system names all 127 qubits, and the system's noise model holds
errors for every one of them. Aer drops the idle qubits from the state, but it still converts and
walks the whole noise model on every run: a Bell circuit on FakeSherbrooke costs about 1.1 s that
way, against milliseconds on a 2-qubit model. So an emulated system runs each circuit reduced to its
active qubits (those any instruction touches), renumbered 0..k-1, with a noise model holding only
those qubits' errors, renumbered alike. Nothing that can change an outcome is dropped: an idle qubit
stays in |0⟩ and no error acts on it (the systems' noise models have no crosstalk terms).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from qiskit import QuantumCircuit, QuantumRegister
from qiskit.circuit import CONTROL_FLOW_OP_NAMES, Delay
from qiskit_aer.noise import NoiseModel
from qiskit_aer.noise.passes import RelaxationNoisePass

# Sub-models kept per worker, by active qubits; a job's circuits usually share their layout.
CACHED_MODELS = 64


def active_qubits(circuit: QuantumCircuit) -> tuple[int, ...]:
    """The indices of the qubits some instruction (other than a barrier) touches, ascending."""
    index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    return tuple(sorted({index[q] for inst in circuit.data if inst.operation.name != "barrier" for q in inst.qubits}))


def reducible(circuit: QuantumCircuit) -> bool:
    """Whether reduce() can rewrite the circuit: no control flow and no classical variables, whose
    blocks and expressions would need rewriting too (those run at full size, as Aer takes them)."""
    if circuit.num_vars or getattr(circuit, "num_stretches", 0):
        return False
    return not any(inst.operation.name in CONTROL_FLOW_OP_NAMES for inst in circuit.data)


def reduce(circuit: QuantumCircuit, active: Sequence[int]) -> QuantumCircuit:
    """The circuit on len(active) qubits, qubit active[i] becoming qubit i; classical bits, registers
    (so outcome keys), name and global phase unchanged."""
    position = {circuit.qubits[q]: i for i, q in enumerate(active)}
    reduced = QuantumCircuit(
        QuantumRegister(len(active), "q"), *circuit.cregs, name=circuit.name, global_phase=circuit.global_phase
    )
    loose = [bit for bit in circuit.clbits if bit not in set(reduced.clbits)]
    if loose:
        reduced.add_bits(loose)
    qubits = reduced.qubits
    for inst in circuit.data:
        if inst.operation.name == "barrier":
            mapped = [qubits[position[q]] for q in inst.qubits if q in position]
            if mapped:
                reduced.barrier(*mapped)
            continue
        reduced.append(inst.operation, [qubits[position[q]] for q in inst.qubits], inst.clbits, copy=False)
    return reduced


class SubModels:
    """Noise models restricted to sets of qubits of one full model, built on first use and kept."""

    def __init__(self, full: NoiseModel) -> None:
        self._full = full
        self._models: OrderedDict[tuple[int, ...], NoiseModel] = OrderedDict()

    @property
    def full(self) -> NoiseModel:
        """The system's whole noise model."""
        return self._full

    def for_qubits(self, active: tuple[int, ...]) -> NoiseModel:
        model = self._models.get(active)
        if model is None:
            model = self._models[active] = restrict(self._full, active)
            if len(self._models) > CACHED_MODELS:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(active)
        return model


def restrict(full: NoiseModel, active: Sequence[int]) -> NoiseModel:
    """The errors of full that act only on active qubits, qubit active[i] renumbered i.

    Aer's NoiseModel has no public way to read its local errors back, so this reads its tables; the
    test suite checks the result against the full model (tests/devices/test_devices_reduction.py).
    """
    number = {q: i for i, q in enumerate(active)}
    model = NoiseModel(basis_gates=full.basis_gates)
    for name, errors in full._local_quantum_errors.items():  # noqa: SLF001
        for qubits, error in errors.items():
            if all(q in number for q in qubits):
                model.add_quantum_error(error, name, [number[q] for q in qubits], warnings=False)
    for name, error in full._default_quantum_errors.items():  # noqa: SLF001
        model.add_all_qubit_quantum_error(error, name, warnings=False)
    for qubits, error in full._local_readout_errors.items():  # noqa: SLF001
        if all(q in number for q in qubits):
            model.add_readout_error(error, [number[q] for q in qubits], warnings=False)
    if full._default_readout_error is not None:  # noqa: SLF001
        model.add_all_qubit_readout_error(full._default_readout_error, warnings=False)  # noqa: SLF001
    for noise_pass in full._custom_noise_passes:  # noqa: SLF001
        if not isinstance(noise_pass, RelaxationNoisePass):
            raise ValueError(f"cannot restrict a noise model with a {type(noise_pass).__name__}")
        picked = list(active)
        model._custom_noise_passes.append(RelaxationNoisePass(  # noqa: SLF001
            t1s=noise_pass._t1s[picked].tolist(), t2s=noise_pass._t2s[picked].tolist(),  # noqa: SLF001
            dt=noise_pass._dt, op_types=Delay,  # noqa: SLF001
            excited_state_populations=noise_pass._p1s[picked].tolist(),  # noqa: SLF001
            target=noise_pass._target,  # noqa: SLF001 - read only for a delay's own duration
        ))
    return model
