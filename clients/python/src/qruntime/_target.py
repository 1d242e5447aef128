"""A Qiskit Target from what the devices service says of a backend, so Qiskit's transpiler compiles for it.

A physical system's target holds every native gate on the qubits (or couplings) its calibration lists,
with their errors and durations, measurement with its readout error, and each qubit's T1, T2 and
frequency; a simulator's holds its gates on every qubit (no coupling map). Instructions Qiskit does
not know by name (a simulator's own, such as Aer's `kraus`) are left out: no circuit a user writes
compiles to them.
"""

from __future__ import annotations

from collections import defaultdict

from qiskit.circuit import Delay, Parameter, Reset
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.transpiler import InstructionProperties, QubitProperties, Target

from .devices.v1 import backend_pb2

_STANDARD = get_standard_gate_name_mapping()


def build_target(backend: backend_pb2.Backend, properties: backend_pb2.BackendProperties) -> Target:
    """The Target of backend, with the calibration data in properties (empty for a simulator)."""
    config = backend.configuration
    qubits = {q.qubit: q for q in properties.qubits}
    target = Target(
        description=backend.name,
        num_qubits=config.num_qubits,
        dt=config.dt or None,
        qubit_properties=[
            QubitProperties(t1=q.t1 or None, t2=q.t2 or None, frequency=q.frequency or None)
            for q in (qubits.get(i, backend_pb2.QubitProperties(qubit=i)) for i in range(config.num_qubits))
        ] if qubits else None,
    )
    calibrated: dict[str, dict[tuple[int, ...], InstructionProperties]] = defaultdict(dict)
    for gate in properties.gates:
        calibrated[gate.gate][tuple(gate.qubits)] = InstructionProperties(duration=gate.duration, error=gate.error)
    edges = [(e.control, e.target) for e in config.coupling_map]
    everywhere = not edges and not calibrated  # an ideal simulator: every gate on every qubit
    for name in config.basis_gates:
        gate = _STANDARD.get(name)
        if gate is None:
            continue
        found = None if everywhere else calibrated.get(name)
        if not everywhere and not found:  # listed, not calibrated: on every qubit, or on every coupling
            found = {pair: None for pair in edges} if gate.num_qubits == 2 else _on_each(config)
        target.add_instruction(gate, found, name=name)
    _add_measure_reset_delay(target, config, qubits, everywhere)
    return target


def _on_each(config: backend_pb2.BackendConfiguration) -> dict[tuple[int, ...], None]:
    return {(i,): None for i in range(config.num_qubits)}


def _add_measure_reset_delay(target: Target, config, qubits, everywhere: bool) -> None:
    if everywhere:
        target.add_instruction(_STANDARD["measure"], None)
        target.add_instruction(Reset(), None)
        target.add_instruction(Delay(Parameter("t")), None)
        return
    target.add_instruction(_STANDARD["measure"], {
        (i,): InstructionProperties(error=qubits[i].readout_error) if i in qubits else None
        for i in range(config.num_qubits)
    })
    target.add_instruction(Reset(), _on_each(config))
    target.add_instruction(Delay(Parameter("t")), _on_each(config))
