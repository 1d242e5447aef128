"""Physical systems emulated from IBM calibration snapshots (5-qubit FakeManilaV2 and FakeLimaV2)."""

from __future__ import annotations

import pytest

SYSTEMS = ("ibm_manila", "ibm_lima")


@pytest.mark.parametrize("name", SYSTEMS)
def test_properties_carry_the_calibration(backends, name):
    properties = backends[name].properties()
    assert properties.HasField("last_update_time")
    assert [q.qubit for q in properties.qubits] == [0, 1, 2, 3, 4]
    for qubit in properties.qubits:
        assert 1e-6 < qubit.t1 < 1e-2 and 1e-6 < qubit.t2 < 1e-2
        assert 4e9 < qubit.frequency < 6e9
        assert 0 < qubit.readout_error < 0.5
    cx = [g for g in properties.gates if g.gate == "cx"]
    assert cx and all(0 < g.error < 0.2 and g.duration > 0 and len(g.qubits) == 2 for g in cx)
    assert {g.gate for g in properties.gates} >= {"cx", "sx", "x"}


@pytest.mark.parametrize("name", SYSTEMS)
def test_configuration_has_coupling_map_basis_gates_and_dt(backends, name):
    config = backends[name].configuration()
    assert config.num_qubits == 5
    assert set(config.basis_gates) == {"cx", "id", "rz", "sx", "x"}
    assert (0, 1) in {(e.control, e.target) for e in config.coupling_map}
    assert config.dt > 0
    assert config.simulation_method == ""
    assert config.max_shots > 0 and config.max_experiments > 0


@pytest.mark.parametrize("name", SYSTEMS)
def test_bell_gives_mostly_00_and_11_with_some_noise(backends, bell, name):
    (result,) = backends[name].run([bell], shots=1024, seed=3)
    correlated = result.counts.get("00", 0) + result.counts.get("11", 0)
    assert sum(result.counts.values()) == 1024
    assert correlated >= 0.85 * 1024
    assert correlated < 1024  # the calibration's noise shows
    assert list(result.register_names) == ["c"]


def test_a_seeded_run_on_a_system_reproduces(backends, bell):
    system = backends["ibm_lima"]
    assert system.run([bell], 300, seed=9, memory=True) == system.run([bell], 300, seed=9, memory=True)
