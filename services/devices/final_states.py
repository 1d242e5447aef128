"""The probabilities of a small ideal circuit's measured qubits in its final state, from Aer's
statevector simulator, through one AerState each thread keeps.

`AerStatevector(circuit)` makes an AerState for every circuit and copies the final state out to numpy,
where the sampler then summed the measured qubits' probabilities: for a Bell circuit, with the circuit
rebuilt without its measurements first, 0.18 ms in a loop and 0.42-0.45 ms as a simulation worker
meets it, a few milliseconds after its last run (bench_gaps says why that costs). Kept, the state is
renewed for each circuit, simulates in a buffer of ours (no copy out), is given the gates as
AerStatevector gives them (its own `_aer_evolve_instruction`: qiskit-aer is pinned, and
tests/devices/test_devices_sampling.py holds the two to the same probabilities), and sums the measured
qubits' probabilities itself: 0.06 ms in a loop, 0.15-0.16 ms cold.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from qiskit.circuit import Gate
from qiskit_aer.quantum_info.states.aer_state import AerState
from qiskit_aer.quantum_info.states.aer_statevector import BASIS_GATES, AerStatevector

_BASIS = BASIS_GATES["statevector"]
_CUSTOM = ["reset", "kraus", "barrier", "initialize"]  # what AerStatevector applies itself on this method
_kept = threading.local()


def measured_probabilities(num_qubits: int, gates: Sequence[tuple[Gate, list[int]]], measured: list[int]
                           ) -> np.ndarray:
    """The probability of each outcome of the measured qubits (index bit j: qubit measured[j]) after the
    gates (each with the indices of its qubits) act on |0...0> of num_qubits qubits."""
    state = _state()
    amplitudes = np.zeros(1 << num_qubits, dtype=complex)
    amplitudes[0] = 1
    try:
        state.initialize(amplitudes, copy=False)
        for gate, qubits in gates:
            AerStatevector._aer_evolve_instruction(state, gate, qubits, _BASIS, _CUSTOM)
        return np.asarray(state.probabilities(measured))
    finally:
        try:
            state.close()
            state.renew()
        except Exception:  # noqa: BLE001 - a state Aer will not renew is dropped, and the next one made anew
            _kept.state = None


def _state() -> AerState:
    state = getattr(_kept, "state", None)
    if state is None:
        state = _kept.state = AerState(method="statevector", max_parallel_threads=1)
    return state
