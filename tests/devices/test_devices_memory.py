"""The memory guard: estimates checked against what qiskit-aer itself does, and the limits applied."""

from __future__ import annotations

import math

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit_aer import AerSimulator
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

from qruntime_devices import memory
from qruntime_devices.adapters import AerSimulatorAdapter
from qruntime_devices.emulated import EmulatedSystemAdapter
from qruntime_kit.errors import InvalidArgument

GiB = 1 << 30


def bellish(qubits: int, rz: float | None = None) -> QuantumCircuit:
    """H, then a CX chain across every qubit (then an rz on the last), all measured: every qubit
    simulated, and Clifford unless the rz says otherwise."""
    circuit = QuantumCircuit(qubits, name=f"bellish-{qubits}")
    circuit.h(0)
    for qubit in range(qubits - 1):
        circuit.cx(qubit, qubit + 1)
    if rz is not None:
        circuit.rz(rz, qubits - 1)
    circuit.measure_all()
    return circuit


def aer_metadata(circuit: QuantumCircuit, simulator: AerSimulator | None = None, shots: int = 16) -> dict:
    result = (simulator or AerSimulator()).run(circuit, shots=shots).result()
    assert result.success, result.status
    return result.results[0].metadata


def test_state_sizes_per_method():
    assert memory.state_bytes("statevector", 29) == 8 * GiB
    assert memory.state_bytes("automatic", 30) == 16 * GiB
    assert memory.state_bytes("density_matrix", 14) == memory.state_bytes("unitary", 14) == 4 * GiB
    assert memory.state_bytes("superop", 7) == 4 * GiB
    assert memory.state_bytes("stabilizer", 100) == 2 * 100 * (16 * 104 + 16)  # Aer's own formula
    assert memory.state_bytes("matrix_product_state", 63) < 64 << 20  # assumed bond dimension 64
    with pytest.raises(ValueError):
        memory.state_bytes("tensor_network", 3)


@pytest.mark.parametrize(
    ("method", "limit", "cap", "most"),
    [("statevector", 4 * GiB, 30, 28), ("statevector", 1 << 40, 30, 30), ("density_matrix", 4 * GiB, 15, 14),
     ("matrix_product_state", 4 * GiB, 63, 63), ("stabilizer", 4 * GiB, 10_000, 10_000), ("superop", 0, 7, 0)],
)
def test_the_most_qubits_that_fit(method, limit, cap, most):
    assert memory.most_qubits(method, limit, cap) == most


def test_only_qubits_that_affect_a_result_count_as_aer_truncates_them():
    idle = QuantumCircuit(40, 2)  # 38 idle qubits, one that is acted on but never measured
    idle.h(0)
    idle.t(0)
    idle.cx(0, 1)
    idle.h(7)
    idle.delay(100, 9)
    idle.barrier()
    idle.measure([0, 1], [0, 1])
    ancilla = QuantumCircuit(5, 1)  # qubit 2 feeds the measured qubit through a CX: it counts
    ancilla.h(2)
    ancilla.cx(2, 0)
    ancilla.x(4)
    ancilla.measure(0, 0)
    for circuit, expected in ((idle, 2), (ancilla, 2), (bellish(6), 6)):
        assert memory.simulated_qubits(circuit) == expected
        assert aer_metadata(circuit, AerSimulator(method="statevector"))["num_qubits"] == expected


def test_with_control_flow_every_touched_qubit_counts():
    circuit = QuantumCircuit(6, 1)
    with circuit.for_loop(range(2)):
        circuit.x(3)
    circuit.h(0)
    circuit.measure(0, 0)
    assert memory.simulated_qubits(circuit) == 2  # never fewer than Aer's, which keeps 0 only


def test_automatic_picks_the_method_aer_picks():
    clifford = bellish(4, rz=math.pi / 2)  # still Clifford: Aer's stabilizer method accepts it
    for circuit, method in ((clifford, "stabilizer"), (bellish(4, rz=0.3), "statevector")):
        found = memory.estimate(circuit, "automatic", shots=100, limit=4 * GiB)
        assert found.method == method == aer_metadata(circuit)["method"]


@pytest.mark.parametrize("shots", [3, 1024])
def test_a_noisy_emulated_system_picks_the_method_aer_picks(shots):
    system = FakeManilaV2()
    adapter = EmulatedSystemAdapter(system, name="manila")
    adapter.limit_memory(4 * GiB)
    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    circuit = transpile(circuit, system, optimization_level=1, seed_transpiler=0)  # the system runs its ISA only
    (found,) = adapter.memory_estimates([circuit], shots)
    noisy = AerSimulator.from_backend(system, max_memory_mb=4096)
    metadata = aer_metadata(circuit, noisy, shots)
    assert found.qubits == metadata["num_qubits"] == 2
    if shots > 4:  # more shots than 2ⁿ: the density matrix, as Aer
        assert found.method == metadata["method"] == "density_matrix"
    else:  # Aer may take the stabilizer method when the calibration noise happens to be Clifford; the
        # estimate takes the state vector, never less
        assert found.method == "statevector" and metadata["method"] in ("statevector", "stabilizer")
        assert found.bytes >= memory.state_bytes(metadata["method"], 2)


def test_simulators_report_the_qubits_that_fit_in_the_limit():
    for method, fit in (("statevector", 28), ("automatic", 28), ("matrix_product_state", 63)):
        adapter = AerSimulatorAdapter("simulator", method)
        aer_own = adapter.configuration().num_qubits  # from this machine's memory (MPS: 63)
        adapter.limit_memory(4 * GiB)
        assert adapter.configuration().num_qubits == min(fit, aer_own)


def test_a_circuit_that_cannot_fit_is_refused_with_the_numbers():
    adapter = AerSimulatorAdapter("simulator_statevector", "statevector")
    adapter.limit_memory(4 * GiB)
    with pytest.raises(InvalidArgument) as caught:
        adapter.check([bellish(3), bellish(29)], shots=100)
    error = caught.value
    assert error.reason == "CIRCUIT_NEEDS_TOO_MUCH_MEMORY"
    assert error.metadata == {
        "circuit_index": "1", "circuit_name": "bellish-29", "simulated_qubits": "29", "method": "statevector",
        "estimated_bytes": str(8 * GiB), "limit_bytes": str(4 * GiB), "backend": "simulator_statevector",
    }
    assert "8 GiB" in error.message and "4 GiB" in error.message and "bellish-29" in error.message
    assert [field for field, _ in error.field_violations] == ["circuits_qpy"]


def test_declared_but_idle_qubits_cost_nothing():
    adapter = AerSimulatorAdapter("simulator_statevector", "statevector")
    adapter.limit_memory(64 << 20)  # 21 qubits fit
    wide = QuantumCircuit(40, 2)
    wide.h(0)
    wide.cx(0, 1)
    wide.measure([0, 1], [0, 1])
    (result,) = adapter.run([wide], shots=100)
    assert set(result.counts) == {"00", "11"}


def test_a_clifford_circuit_wider_than_the_state_vector_runs_with_the_stabilizer_method():
    adapter = AerSimulatorAdapter("ibmq_qasm_simulator", "automatic")
    adapter.limit_memory(GiB)
    assert adapter.configuration().num_qubits == 26
    (found,) = adapter.check([bellish(100)], shots=10)
    assert (found.method, found.qubits) == ("stabilizer", 100)
    (result,) = adapter.run([bellish(100)], shots=10)
    assert set(result.counts) <= {"0" * 100, "1" * 100}


def test_bytes_read_as_people_write_them():
    assert memory.describe_bytes(8 * GiB) == "8 GiB"
    assert memory.describe_bytes(1536 << 20) == "1.5 GiB"
    assert memory.describe_bytes(40) == "40 B"
    assert memory.describe_bytes(16 << 10_000) == "2^10004 B"
