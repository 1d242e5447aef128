"""Small circuits for trying the service, in place of the removed ``qiskit.test.ReferenceCircuits``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qiskit.circuit import QuantumCircuit

__all__ = ["ReferenceCircuits"]


class ReferenceCircuits:
    """Factory of well-known circuits whose outcomes are easy to check."""

    @staticmethod
    def bell() -> QuantumCircuit:
        """A Bell pair measured into a 2-bit register ``c``: about half ``00``, half ``11``."""
        from qiskit.circuit import QuantumCircuit

        circuit = QuantumCircuit(2, 2, name="bell")
        circuit.h(0)
        circuit.cx(0, 1)
        circuit.measure([0, 1], [0, 1])
        return circuit

    @staticmethod
    def ghz(num_qubits: int = 3) -> QuantumCircuit:
        """A GHZ state of ``num_qubits`` qubits, all measured: about half all zeros, half all ones."""
        from qiskit.circuit import QuantumCircuit

        if isinstance(num_qubits, bool) or not isinstance(num_qubits, int) or num_qubits < 2:
            raise ValueError(f"a GHZ circuit needs an integer of at least 2 qubits, got {num_qubits!r}")
        circuit = QuantumCircuit(num_qubits, num_qubits, name=f"ghz_{num_qubits}")
        circuit.h(0)
        for qubit in range(1, num_qubits):
            circuit.cx(qubit - 1, qubit)
        circuit.measure(range(num_qubits), range(num_qubits))
        return circuit
