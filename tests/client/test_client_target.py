"""The client's RuntimeBackend as a Qiskit backend: its Target, built from what the devices service says
(the messages of the real adapters here; test_client_service.py gets them through a real suite)."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_ibm_runtime.fake_provider import FakeSherbrooke
from qruntime import RuntimeBackend
from qruntime._target import build_target
from qruntime.devices.v1 import backend_pb2

from qruntime_devices.adapters import AerSimulatorAdapter
from qruntime_devices.emulated import EmulatedSystemAdapter
from qruntime_devices.servicer import backend_message


@pytest.fixture(scope="module")
def sherbrooke() -> tuple[FakeSherbrooke, RuntimeBackend]:
    fake = FakeSherbrooke()
    adapter = EmulatedSystemAdapter(fake, name="ibm_sherbrooke")
    message = backend_message("ibm_sherbrooke", adapter, backend_pb2.BackendStatus(operational=True))
    backend = RuntimeBackend(message)
    backend._target = build_target(message, adapter.properties())  # what .target builds from GetBackendProperties
    return fake, backend


def test_the_target_holds_the_systems_gates_couplings_errors_and_durations(sherbrooke):
    fake, backend = sherbrooke
    ours, theirs = backend.target, fake.target
    assert backend.num_qubits == ours.num_qubits == 127
    assert set(backend.operation_names) >= {"ecr", "rz", "sx", "x", "id", "measure", "reset", "delay"}
    assert set(ours["ecr"]) == set(theirs["ecr"])
    assert sorted(backend.coupling_map.get_edges()) == sorted(fake.coupling_map.get_edges())
    for name in ("ecr", "sx", "x"):
        for qargs, props in theirs[name].items():
            assert ours[name][qargs].error == pytest.approx(props.error or 0.0)
            assert ours[name][qargs].duration == pytest.approx(props.duration or 0.0)
    assert ours["measure"][(5,)].error == pytest.approx(theirs["measure"][(5,)].error)
    assert ours.qubit_properties[3].t1 == pytest.approx(theirs.qubit_properties[3].t1)
    assert ours.dt == theirs.dt


def test_qiskit_compiles_for_it(sherbrooke):
    _, backend = sherbrooke
    ghz = QuantumCircuit(3)
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    ghz.measure_all()
    for compiled in (
        transpile(ghz, backend=backend, seed_transpiler=1),
        generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=1).run(ghz),
    ):
        assert compiled.num_qubits == 127
        assert set(compiled.count_ops()) <= {"ecr", "rz", "sx", "x", "measure", "barrier"}
        for instruction in compiled.data:
            qargs = tuple(compiled.find_bit(q).index for q in instruction.qubits)
            name = instruction.operation.name
            assert name == "barrier" or backend.target.instruction_supported(name, qargs)


def test_a_simulator_has_every_gate_on_every_qubit_and_no_coupling_map():
    adapter = AerSimulatorAdapter("simulator_statevector", "statevector")
    adapter.limit_memory(1 << 30)
    backend = RuntimeBackend(backend_message(adapter.name, adapter, backend_pb2.BackendStatus(operational=True)))
    assert backend.coupling_map is None
    assert backend.target.instruction_supported("cx", (0, 25)) and backend.num_qubits == 26
    assert {"cx", "h", "rz", "measure"} <= set(backend.operation_names)
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    assert transpile(circuit, backend=backend).count_ops() == {"h": 1, "cx": 1}
    with pytest.raises(Exception, match="submit a job"):
        backend.run(circuit)
    assert backend.configuration().coupling_map is None
