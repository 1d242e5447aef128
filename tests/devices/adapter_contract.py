"""The contract every backend adapter passes: what the devices service relies on, checked on the
adapter alone (no service, no workers; test_devices_workers.py covers those).

To check a new adapter (a real provider's, say), subclass AdapterContract in a test module and give it
an `adapter` fixture that returns the adapter ready to run; test_devices_adapter_contract.py does so
for the simulators and the emulated systems. Circuits are compiled for the adapter by Qiskit from the
Target the client builds out of the adapter's own configuration and calibration, so the contract also
checks that what the adapter says of itself is enough to compile for it.
"""

from __future__ import annotations

import pickle

import pytest
from qiskit import QuantumCircuit, transpile
from qruntime._target import build_target
from qruntime.devices.v1 import backend_pb2

from qruntime_devices.adapters import PHYSICAL, SIMULATOR, BackendAdapter
from qruntime_devices.servicer import backend_message
from qruntime_kit.errors import InvalidArgument


def _bell() -> QuantumCircuit:
    bell = QuantumCircuit(2, 2, name="bell")
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    return bell


def _flip(flipped: bool) -> QuantumCircuit:
    circuit = QuantumCircuit(1, 1, name=f"flip-{int(flipped)}")
    if flipped:
        circuit.x(0)
    circuit.measure(0, 0)
    return circuit


class AdapterContract:
    """Subclass it with a fixture `adapter` returning the BackendAdapter under test."""

    @pytest.fixture
    def compile(self, adapter: BackendAdapter):
        """compile(circuits) -> the circuits as a client compiles them for this backend."""
        message = backend_message(adapter.name, adapter, backend_pb2.BackendStatus(operational=True))
        target = build_target(message, adapter.properties())
        return lambda circuits: transpile(circuits, target=target, optimization_level=1, seed_transpiler=0)

    def test_it_says_what_it_is(self, adapter):
        assert adapter.name and adapter.description
        assert adapter.kind in (SIMULATOR, PHYSICAL)
        assert adapter.concurrency >= 1 and adapter.max_execution_time > 0
        assert (adapter.emulation is not None) <= (adapter.kind == PHYSICAL)  # only physical systems are emulated

    def test_its_configuration_is_complete_and_cheap(self, adapter):
        config = adapter.configuration()
        assert config.num_qubits >= 1 and config.basis_gates
        assert config.max_shots >= 1 and config.max_experiments >= 1
        assert adapter.configuration() == config  # fixed: the service serves it on every listing
        if adapter.kind == PHYSICAL:
            assert config.coupling_map or config.num_qubits == 1
            assert config.simulation_method == ""

    def test_a_physical_system_has_calibration_and_a_target(self, adapter):
        if adapter.kind != PHYSICAL:
            pytest.skip("simulators have no calibration")
        properties = adapter.properties()
        assert properties.HasField("last_update_time")
        assert [q.qubit for q in properties.qubits] == list(range(adapter.configuration().num_qubits))
        assert {g.gate for g in properties.gates} <= set(adapter.configuration().basis_gates)
        assert adapter.target() is not None and adapter.target().num_qubits == adapter.configuration().num_qubits

    def test_it_pickles_as_the_workers_need(self, adapter):
        copy = pickle.loads(pickle.dumps(adapter))
        assert type(copy) is type(adapter) and copy.name == adapter.name
        assert copy.configuration() == adapter.configuration()

    def test_it_runs_compiled_circuits_as_one_batch_with_one_result_each_in_order(self, adapter, compile):
        circuits = compile([_flip(True), _bell(), _flip(False)])
        results = adapter.run(circuits, shots=200, seed=1, memory=True)
        assert len(results) == 3
        ones, bell, zeros = results
        assert ones.counts.get("1", 0) > 150 and zeros.counts.get("0", 0) > 150
        assert set(bell.counts) <= {"00", "01", "10", "11"}
        assert bell.counts.get("00", 0) + bell.counts.get("11", 0) > 150
        for result in results:
            assert sum(result.counts.values()) == 200
            assert len(result.memory) == 200 and set(result.memory) <= set(result.counts)
            assert list(result.register_names) == ["c"]

    def test_a_seed_reproduces_a_run(self, adapter, compile):
        if adapter.kind == PHYSICAL and adapter.emulation is None:
            pytest.skip("real hardware draws its own randomness")
        (bell,) = compile([_bell()])
        assert adapter.run([bell], 100, seed=5, memory=True) == adapter.run([bell], 100, seed=5, memory=True)

    def test_it_refuses_what_it_cannot_run_with_typed_reasons(self, adapter, compile):
        config = adapter.configuration()
        (bell,) = compile([_bell()])
        silent = QuantumCircuit(1)
        silent.x(0)
        wide = QuantumCircuit(config.num_qubits + 1)
        wide.measure_all()
        refusals = [
            ([bell], 0, "INVALID_SHOTS"),
            ([bell], config.max_shots + 1, "INVALID_SHOTS"),
            ([bell] * (config.max_experiments + 1), 10, "TOO_MANY_CIRCUITS"),
            ([silent], 10, "NO_MEASUREMENTS"),
        ]
        if adapter.kind == PHYSICAL:
            refusals += [([wide], 10, "CIRCUIT_TOO_WIDE"), ([_bell()], 10, "CIRCUIT_NOT_IN_ISA")]
        for circuits, shots, reason in refusals:
            with pytest.raises(InvalidArgument) as caught:
                adapter.check(circuits, shots)
            assert caught.value.reason == reason, (shots, reason)
            assert caught.value.message
