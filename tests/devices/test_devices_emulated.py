"""Physical systems emulated from IBM calibration snapshots: the 5-qubit FakeManilaV2 and FakeLimaV2,
the 127-qubit Eagle FakeSherbrooke and the 133-qubit Heron FakeTorino."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit
from qiskit_ibm_runtime.fake_provider import FakeManilaV2
from systems import isa

from qruntime_devices.emulated import EmulatedSystemAdapter
from qruntime_devices.reduction import active_qubits, reduce
from qruntime_kit.errors import InvalidArgument

# name: (qubits, two-qubit gate)
SYSTEMS = {
    "ibm_manila": (5, "cx"), "ibm_lima": (5, "cx"), "ibm_sherbrooke": (127, "ecr"), "ibm_torino": (133, "cz"),
}


@pytest.mark.parametrize("name", SYSTEMS)
def test_properties_carry_the_calibration(backends, name):
    size, two_qubit = SYSTEMS[name]
    properties = backends[name].properties()
    assert properties.HasField("last_update_time")
    assert [q.qubit for q in properties.qubits] == list(range(size))
    calibrated = [q for q in properties.qubits if q.t1 and q.t2]
    assert len(calibrated) >= 0.95 * size  # snapshots of large systems miss a qubit or two
    for qubit in calibrated:
        assert 1e-6 < qubit.t1 < 1e-2 and 1e-6 < qubit.t2 < 1e-2
        assert qubit.frequency == 0 or 4e9 < qubit.frequency < 6e9  # 0: not in the snapshot (Heron)
        assert 0 < qubit.readout_error <= 1
    assert sorted(q.readout_error for q in calibrated)[len(calibrated) // 2] < 0.1  # some qubits are broken
    pairs = [g for g in properties.gates if g.gate == two_qubit]
    assert pairs and all(0 < g.error <= 1 and g.duration > 0 and len(g.qubits) == 2 for g in pairs)
    assert {g.gate for g in properties.gates} >= {two_qubit, "sx", "x"}


@pytest.mark.parametrize("name", SYSTEMS)
def test_configuration_has_coupling_map_basis_gates_and_dt(backends, name):
    size, two_qubit = SYSTEMS[name]
    config = backends[name].configuration()
    assert config.num_qubits == size
    assert set(config.basis_gates) == {two_qubit, "id", "rz", "sx", "x"}
    assert len(config.coupling_map) >= size - 1  # connected
    assert config.dt > 0
    assert config.simulation_method == ""
    assert config.max_shots > 0 and config.max_experiments > 0
    assert config.max_execution_time.seconds == 8 * 3600


@pytest.mark.parametrize("name", SYSTEMS)
def test_the_description_says_emulated_and_from_which_snapshot(backends, name):
    adapter = backends[name]
    date = adapter.properties().last_update_time.ToDatetime().date().isoformat()
    assert adapter.kind == "physical"
    assert "emulated" in adapter.description and date in adapter.description
    assert adapter.emulation.snapshot_time == adapter.properties().last_update_time
    assert adapter.emulation.source.startswith("qiskit_ibm_runtime.fake_provider.")


# Building a large system's noise model takes seconds: those are slow tests.
@pytest.mark.parametrize("name", [
    name if size < 100 else pytest.param(name, marks=pytest.mark.slow) for name, (size, _) in SYSTEMS.items()
])
def test_bell_gives_mostly_00_and_11_with_some_noise(backends, bell, name):
    (result,) = backends[name].run([isa(bell, name)], shots=1024, seed=3)
    correlated = result.counts.get("00", 0) + result.counts.get("11", 0)
    assert sum(result.counts.values()) == 1024
    assert correlated >= 0.80 * 1024
    assert correlated < 1024  # the calibration's noise shows
    assert list(result.register_names) == ["c"]


def test_a_seeded_run_on_a_system_reproduces(backends, bell):
    system, circuit = backends["ibm_lima"], isa(bell, "ibm_lima")
    assert system.run([circuit], 300, seed=9, memory=True) == system.run([circuit], 300, seed=9, memory=True)


def test_a_circuit_not_in_the_systems_isa_is_refused_naming_what_is_not(backends, bell):
    system = backends["ibm_sherbrooke"]
    with pytest.raises(InvalidArgument) as caught:
        system.check([isa(bell, "ibm_sherbrooke"), bell], 100)  # h and cx are no native gates of an Eagle
    assert caught.value.reason == "CIRCUIT_NOT_IN_ISA"
    assert caught.value.metadata["circuit_index"] == "1" and caught.value.metadata["instruction"] == "h"
    assert "generate_preset_pass_manager" in caught.value.message
    uncoupled = QuantumCircuit(127, 2)
    uncoupled.ecr(0, 50)  # native, but those qubits are far apart
    uncoupled.measure([0, 50], [0, 1])
    with pytest.raises(InvalidArgument) as caught:
        system.check([uncoupled], 100)
    assert caught.value.metadata["qubits"] == "0,50" and "not coupled" in caught.value.message
    inside = QuantumCircuit(127, 1)
    inside.measure(0, 0)
    with inside.if_test((inside.clbits[0], 1)):
        inside.h(0)  # not native, inside control flow
    with pytest.raises(InvalidArgument) as caught:
        system.check([inside], 100)
    assert caught.value.metadata["instruction"] == "h"


def test_a_reduced_circuit_gives_what_the_whole_system_gives():
    """The same seed gives the same shots whether the circuit runs on the 2 qubits it touches with
    their sub-model or on the whole system as the fake backend itself simulates it."""
    system = FakeManilaV2()
    circuit = QuantumCircuit(5, 2)
    circuit.sx(3)
    circuit.cx(3, 4)
    circuit.delay(2000, 4, unit="dt")  # thermal relaxation on delays comes through too
    circuit.x(4)
    circuit.measure([3, 4], [0, 1])
    adapter = EmulatedSystemAdapter(system, name="manila")
    circuit = isa(circuit, "ibm_manila")
    (reduced,) = adapter.run([circuit], shots=4000, seed=5)
    whole = system.run(circuit, shots=4000, seed_simulator=5)  # the fake backend's own simulation
    assert dict(reduced.counts) == whole.result().get_counts()
    assert len(reduced.counts) == 4  # noisy: every outcome shows


def test_reduce_keeps_registers_and_renumbers_qubits():
    circuit = QuantumCircuit(7, 2, name="wide")
    circuit.h(5)
    circuit.barrier()
    circuit.cx(5, 2)
    circuit.measure([2, 5], [0, 1])
    assert active_qubits(circuit) == (2, 5)
    reduced = reduce(circuit, (2, 5))
    assert reduced.num_qubits == 2 and reduced.name == "wide" and reduced.cregs == circuit.cregs
    assert [(i.operation.name, [reduced.find_bit(q).index for q in i.qubits]) for i in reduced.data] == [
        ("h", [1]), ("barrier", [0, 1]), ("cx", [1, 0]), ("measure", [0]), ("measure", [1]),
    ]
