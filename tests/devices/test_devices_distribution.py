"""The emulated 127-qubit system gives the output distribution qiskit-ibm-runtime's local testing mode
gives on the same fake backend, within sampling error: our emulation reduces circuits to the qubits
they touch and restricts the noise model to them (reduction.py), which must change nothing a user sees.

A chi-squared test of homogeneity on the two samples' counts; the same test must tell the noisy system
from an ideal simulator, or it could not fail at all."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
from qiskit_ibm_runtime import SamplerV2
from qiskit_ibm_runtime.fake_provider import FakeSherbrooke
from scipy.stats import chi2_contingency
from systems import isa

pytestmark = pytest.mark.slow  # local testing mode takes seconds a job on a 127-qubit system

SHOTS = 20_000
ALPHA = 1e-3  # a false alarm once in a thousand runs


def _ghz() -> QuantumCircuit:
    ghz = QuantumCircuit(3, 3, name="ghz")
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    ghz.measure([0, 1, 2], [0, 1, 2])
    return ghz


def _same_distribution(a: dict[str, int], b: dict[str, int]) -> float:
    """The p-value of "a and b are samples of one distribution"."""
    outcomes = sorted(set(a) | set(b))
    table = [[a.get(o, 0) for o in outcomes], [b.get(o, 0) for o in outcomes]]
    return chi2_contingency(table).pvalue


def test_the_emulated_sherbrooke_samples_what_local_testing_mode_samples(backends):
    circuit = isa(_ghz(), "ibm_sherbrooke")
    (ours,) = backends["ibm_sherbrooke"].run([circuit], shots=SHOTS, seed=11)
    local = SamplerV2(mode=FakeSherbrooke()).run([circuit], shots=SHOTS).result()[0].data.c.get_counts()
    ideal = AerSimulator().run(circuit, shots=SHOTS, seed_simulator=11).result().get_counts()
    assert sum(ours.counts.values()) == sum(local.values()) == SHOTS
    assert _same_distribution(dict(ours.counts), local) > ALPHA
    assert _same_distribution(dict(ours.counts), ideal) < ALPHA  # the test sees the noise
    errors = SHOTS - ours.counts.get("000", 0) - ours.counts.get("111", 0)
    assert 0.01 * SHOTS < errors < 0.3 * SHOTS
