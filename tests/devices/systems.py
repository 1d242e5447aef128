"""Circuits made ISA for the emulated systems, as their users' clients make them (transpiled for the
system's target), since those systems run nothing else."""

from __future__ import annotations

import functools

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime import fake_provider

from qruntime_devices.adapters import EMULATED_SYSTEMS


@functools.cache
def _pass_manager(name: str):
    system = getattr(fake_provider, EMULATED_SYSTEMS[name])()
    return generate_preset_pass_manager(optimization_level=1, backend=system, seed_transpiler=0)


def isa(circuit: QuantumCircuit, name: str) -> QuantumCircuit:
    """circuit transpiled for the emulated system called name (e.g. "ibm_lima")."""
    return _pass_manager(name).run(circuit)
