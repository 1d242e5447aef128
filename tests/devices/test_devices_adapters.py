"""The backend adapters on real qiskit-aer simulators: outcomes, formatting and input checks."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ClassicalRegister, Gate, Parameter, QuantumRegister
from qiskit.circuit.library import QFTGate
from qiskit_aer import AerSimulator
from qruntime.encoding import dump_circuits_qpy

from qruntime_devices import adapters as adapters_module
from qruntime_devices.adapters import AerSimulatorAdapter
from qruntime_devices.circuits import decode_circuits
from qruntime_kit.errors import Internal, InvalidArgument

SIMULATORS = (
    "ibmq_qasm_simulator", "simulator_statevector", "simulator_mps", "simulator_stabilizer",
    "simulator_extended_stabilizer",
)


def test_default_backends_are_five_simulators_and_four_systems(backends):
    assert list(backends) == sorted(backends)
    kinds = {name: adapter.kind for name, adapter in backends.items()}
    assert kinds == {
        "ibm_lima": "physical",
        "ibm_manila": "physical",
        "ibm_sherbrooke": "physical",
        "ibm_torino": "physical",
        "ibmq_qasm_simulator": "simulator",
        "simulator_extended_stabilizer": "simulator",
        "simulator_mps": "simulator",
        "simulator_stabilizer": "simulator",
        "simulator_statevector": "simulator",
    }
    for adapter in backends.values():
        simulator = adapter.kind == "simulator"
        assert adapter.concurrency == (2 if simulator else 1)
        assert adapter.max_execution_time == (10_800 if simulator else 28_800)
        assert adapter.configuration().max_execution_time.seconds == adapter.max_execution_time
        assert adapter.description


@pytest.mark.parametrize("name", SIMULATORS)
def test_bell_gives_only_00_and_11_about_half_each(backends, bell, name):
    (result,) = backends[name].run([bell], shots=1024, seed=7)
    assert set(result.counts) == {"00", "11"}
    assert sum(result.counts.values()) == 1024
    assert 412 <= result.counts["00"] <= 612
    assert list(result.register_names) == ["c"]
    assert not result.memory


def test_a_seed_reproduces_counts_and_memory(backends, bell):
    simulator = backends["ibmq_qasm_simulator"]
    first = simulator.run([bell], shots=200, seed=11, memory=True)[0]
    again = simulator.run([bell], shots=200, seed=11, memory=True)[0]
    other = simulator.run([bell], shots=200, seed=12, memory=True)[0]
    assert first == again
    assert first.memory != other.memory


def test_memory_has_one_bitstring_per_shot(backends, bell):
    (result,) = backends["ibmq_qasm_simulator"].run([bell], shots=100, seed=1, memory=True)
    assert len(result.memory) == 100
    assert set(result.memory) <= set(result.counts)
    assert sum(result.counts.values()) == 100


def test_keys_separate_registers_last_first_as_qiskit_prints(backends):
    a, b = ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
    circuit = QuantumCircuit(QuantumRegister(3), a, b)
    circuit.x(0)
    circuit.x(2)
    circuit.measure(0, a[0])
    circuit.measure(1, b[0])
    circuit.measure(2, b[1])
    (result,) = backends["ibmq_qasm_simulator"].run([circuit], shots=10, memory=True)
    assert dict(result.counts) == {"10 1": 10}
    assert list(result.memory) == ["10 1"] * 10
    assert list(result.register_names) == ["b", "a"]


def test_several_circuits_give_results_in_order(backends, bell):
    ones = QuantumCircuit(3, 3)
    ones.x([0, 1, 2])
    ones.measure(range(3), range(3))
    results = backends["ibmq_qasm_simulator"].run([ones, bell, ones], shots=50, seed=3)
    assert [dict(r.counts) for r in (results[0], results[2])] == [{"111": 50}] * 2
    assert set(results[1].counts) == {"00", "11"}


def test_bell_runs_without_transpiling_but_custom_gates_are_transpiled(backends, bell, monkeypatch):
    calls = []
    real_transpile = adapters_module.transpile
    spy = lambda *args, **kwargs: calls.append(args) or real_transpile(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr(adapters_module, "transpile", spy)
    simulator = backends["ibmq_qasm_simulator"]
    simulator.run([bell], shots=10)
    assert calls == []

    flip = QuantumCircuit(1, name="flip")
    flip.x(0)
    custom = QuantumCircuit(2, 2)
    custom.append(flip.to_gate(), [1])
    custom.append(QFTGate(1), [0])  # a Hadamard, as a library gate Aer does not know by name
    custom.barrier()
    custom.measure([0, 1], [0, 1])
    (result,) = simulator.run([custom], shots=400, seed=5)
    assert len(calls) == 1
    assert set(result.counts) == {"10", "11"}


def test_a_gate_without_definition_is_not_runnable(backends):
    circuit = QuantumCircuit(1, 1)
    circuit.append(Gate("mystery", 1, []), [0])
    circuit.measure(0, 0)
    with pytest.raises(InvalidArgument) as caught:
        backends["ibmq_qasm_simulator"].run([circuit], shots=10)
    assert caught.value.reason == "CIRCUIT_NOT_RUNNABLE"


def test_a_simulator_failure_is_internal_with_the_simulators_message(bell):
    """Circuits reach Aer only once checked, so what Aer refuses then is the simulator's failure, not the
    caller's: INTERNAL SIMULATOR_FAILED (here an instruction slipped past the checks)."""
    circuit = QuantumCircuit(1, 1, name="slipped")
    circuit.append(Gate("mystery", 1, []), [0])
    circuit.measure(0, 0)
    with pytest.raises(Internal) as caught:
        adapters_module.run_on_aer(AerSimulator(), "some_simulator", [circuit], [circuit], 10, None, False)
    assert caught.value.reason == "SIMULATOR_FAILED"
    assert "mystery" in caught.value.message and caught.value.metadata == {"backend": "some_simulator"}


@pytest.mark.parametrize("shots", [0, -1, 100_001])
def test_shots_outside_the_backend_range_are_refused(backends, bell, shots):
    with pytest.raises(InvalidArgument) as caught:
        backends["ibmq_qasm_simulator"].run([bell], shots=shots)
    assert [field for field, _ in caught.value.field_violations] == ["shots"]


def test_too_many_or_no_circuits_are_refused(backends, bell):
    for circuits in ([bell] * 301, []):
        with pytest.raises(InvalidArgument) as caught:
            backends["ibmq_qasm_simulator"].run(circuits, shots=1)
        assert [field for field, _ in caught.value.field_violations] == ["circuits_qpy"]


def test_a_circuit_wider_than_the_backend_is_refused(backends):
    wide = QuantumCircuit(6, 6)
    wide.measure(range(6), range(6))
    for name in ("ibm_manila", "ibm_lima"):
        with pytest.raises(InvalidArgument) as caught:
            backends[name].run([wide], shots=10)
        assert caught.value.reason == "CIRCUIT_TOO_WIDE"
        assert caught.value.metadata["backend_qubits"] == "5"
    # On simulators memory decides (see test_devices_memory.py); past what Aer can address at all,
    # a circuit is too wide.
    too_wide = QuantumCircuit(64)
    too_wide.measure_all()
    with pytest.raises(InvalidArgument) as caught:
        backends["simulator_statevector"].run([too_wide], shots=10)
    assert caught.value.reason == "CIRCUIT_TOO_WIDE"
    assert caught.value.metadata["backend_qubits"] == "63"


def test_a_circuit_without_measurements_is_refused(backends, bell):
    silent = QuantumCircuit(2)
    silent.h(0)
    with pytest.raises(InvalidArgument) as caught:
        backends["ibmq_qasm_simulator"].run([bell, silent], shots=10)
    assert caught.value.reason == "NO_MEASUREMENTS"
    assert caught.value.metadata["circuit_index"] == "1"


def test_a_measurement_inside_control_flow_counts(backends):
    circuit = QuantumCircuit(1, 1)
    with circuit.for_loop(range(3)):  # (Aer 0.18 cannot run a measurement inside if_else)
        circuit.x(0)
        circuit.measure(0, 0)
    (result,) = backends["ibmq_qasm_simulator"].run([circuit], shots=10)
    assert dict(result.counts) == {"1": 10}


def test_unbound_parameters_are_refused(backends):
    circuit = QuantumCircuit(1, 1)
    circuit.rx(Parameter("theta"), 0)
    circuit.measure(0, 0)
    with pytest.raises(InvalidArgument) as caught:
        backends["ibmq_qasm_simulator"].run([circuit], shots=10)
    assert caught.value.reason == "UNBOUND_PARAMETERS"


def test_qpy_round_trips_and_garbage_is_refused(bell):
    assert decode_circuits(dump_circuits_qpy([bell, bell])) == [bell, bell]
    for garbage in (b"", b"not qpy at all", dump_circuits_qpy(bell)[:20]):
        with pytest.raises(InvalidArgument) as caught:
            decode_circuits(garbage)
        assert caught.value.reason == "INVALID_QPY"


def test_simulator_configuration_and_empty_properties():
    adapter = AerSimulatorAdapter("mps", "matrix_product_state")
    config = adapter.configuration()
    assert config.simulation_method == "matrix_product_state"
    assert config.max_shots == 100_000 and config.max_experiments == 300
    assert {"cx", "h", "rz"} <= set(config.basis_gates)
    assert "measure" not in config.basis_gates and not any(g.startswith("save_") for g in config.basis_gates)
    assert not config.coupling_map
    assert adapter.properties() == type(adapter.properties())()


def test_the_extended_stabilizer_runs_rotations_at_any_angle_and_refuses_control_flow(backends):
    """Aer's extended stabilizer lists rz but fails at run time on non-Clifford angles: circuits are
    rewritten in p for it, so ry/rz/rx at any angle run. (It samples each shot by a Markov chain, about
    0.1 s a shot here: a few shots of a circuit whose outcome is certain.)"""
    adapter = backends["simulator_extended_stabilizer"]
    circuit = QuantumCircuit(1)
    circuit.ry(1.0, 0)
    circuit.rz(0.4, 0)
    circuit.rx(0.3, 0)
    circuit.rx(-0.3, 0)
    circuit.rz(-0.4, 0)
    circuit.ry(-1.0, 0)  # undoes the rest: always 0
    circuit.measure_all()
    [result] = adapter.run([circuit], shots=8, seed=11)
    assert dict(result.counts) == {"0": 8}
    branching = QuantumCircuit(1, 1)
    branching.h(0)
    branching.measure(0, 0)
    with branching.if_test((branching.clbits[0], 1)):
        branching.x(0)
    branching.measure(0, 0)
    with pytest.raises(InvalidArgument) as caught:
        adapter.run([branching], shots=10)
    assert caught.value.reason == "CIRCUIT_NOT_RUNNABLE" and "if_else" in caught.value.message
