"""A simulation worker serving an iterative program's steps, in this process (the service's end of its
channel is a script of frames): each job's QPY circuits are decoded once and bound afresh at every
step, never served to another job, and a run within the memory the service holds for it simulates
without waiting for GO."""

from __future__ import annotations

import pickle

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector
from qruntime.devices.v1 import devices_service_pb2 as pb
from qruntime.encoding import dump_circuits_qpy
from qruntime.primitives.v1 import primitives_pb2 as ppb

from qruntime_devices import primitives, protocol
from qruntime_devices.adapters import AerSimulatorAdapter
from qruntime_devices.decoded import DecodedCircuits
from qruntime_devices.worker import Worker
from qruntime_kit.workers import ChannelClosed

BACKEND = "ibmq_qasm_simulator"
TERMS = [("ZZ", 1.0), ("XI", 0.5), ("IX", 0.5)]  # bench_execution's VQE observable


class Worked:
    """A worker in this process with the backend loaded; the service's end of its channel is a script
    of frames to hand it, and what it sent back."""

    def __init__(self) -> None:
        self.frames: list[bytes] = [
            protocol.ADAPTER + BACKEND.encode() + b"\0" + pickle.dumps(AerSimulatorAdapter(BACKEND))]
        self.sent: list[bytes] = []
        self.worker = Worker(self, max_reply=1 << 30)
        assert self.serve([]) == [(protocol.READY, b"")]

    def recv(self) -> bytes:
        if not self.frames:
            raise ChannelClosed("the script is over")
        return self.frames.pop(0)

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)

    def serve(self, frames: list[bytes]) -> list[tuple[bytes, bytes]]:
        """The worker's answers, as (tag, body), to frames."""
        start = len(self.sent)
        self.frames += frames
        self.worker.serve()  # until the script is over
        return [protocol.split(frame) for frame in self.sent[start:]]


def ansatz() -> QuantumCircuit:
    theta = ParameterVector("t", 4)
    circuit = QuantumCircuit(2)
    circuit.ry(theta[0], 0)
    circuit.ry(theta[1], 1)
    circuit.cx(0, 1)
    circuit.ry(theta[2], 0)
    circuit.ry(theta[3], 1)
    return circuit


def step(circuit: QuantumCircuit, values: list[float], job: str, budget: int = 1 << 30) -> bytes:
    """A RUN frame of one estimator step, as the built-in estimator sends it from a program."""
    pub = ppb.EstimatorPub(circuit=ppb.Circuit(qpy=dump_circuits_qpy(circuit)), observables=ppb.ObservablesArray(
        shape=[1], observables=[ppb.SparsePauliSum(paulis=[p for p, _ in TERMS], coeffs=[c for _, c in TERMS])]))
    pub.parameter_values.parameter_names.extend(p.name for p in circuit.parameters)
    pub.parameter_values.values.shape.append(len(values))
    pub.parameter_values.values.values.extend(values)
    estimator = ppb.EstimatorInput(pubs=[pub], options=ppb.EstimatorOptions(default_shots=4000, seed=7))
    request = pb.RunCircuitsRequest(backend=BACKEND, job_id=job, primitive=ppb.PrimitiveInput(estimator=estimator))
    return protocol.run_frame(budget, request.SerializeToString())


def energies(answers: list[tuple[bytes, bytes]]) -> list[float]:
    assert all(tag in (protocol.CHECKED, protocol.RAN) for tag, _ in answers), answers
    ran = [pb.RunCircuitsResponse.FromString(body) for tag, body in answers if tag == protocol.RAN]
    return [r.primitive_result.estimator.pub_results[0].evs.values[0] for r in ran]


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """One entry per QPY file the worker decodes."""
    seen: list[int] = []
    load = primitives.load_circuits_qpy

    def counting(data: bytes):
        seen.append(len(data))
        return load(data)

    monkeypatch.setattr(primitives, "load_circuits_qpy", counting)
    return seen


def test_a_jobs_steps_decode_its_circuit_once_and_bind_each_steps_values(decodes) -> None:
    circuit = ansatz()
    steps = [[0.1, 0.2, 0.3, 0.4], [1.0, -0.5, 2.0, 0.7], [0.1, 0.2, 0.3, 0.4]]
    found = energies(Worked().serve([step(circuit, values, "job-a") for values in steps]))
    assert len(decodes) == 1  # the three steps of job-a: decoded once
    assert found[0] == found[2]  # the same values and seed: the kept circuit was not changed by binding
    exact = SparsePauliOp.from_list(TERMS)
    for values, energy in zip(steps, found, strict=True):
        expected = Statevector(circuit.assign_parameters(values)).expectation_value(exact).real
        assert energy == pytest.approx(expected, abs=0.05)
    # Each step as a worker that never saw the job: the same numbers.
    assert [energies(Worked().serve([step(circuit, values, "fresh")]))[0] for values in steps] == found


def test_another_job_sending_the_same_circuit_decodes_it_itself(decodes) -> None:
    circuit = ansatz()
    worked = Worked()
    assert len(set(energies(worked.serve([step(circuit, [0.1] * 4, "job-a"), step(circuit, [0.1] * 4, "job-b")])))) == 1
    assert len(decodes) == 2
    changed = circuit.copy()
    changed.rz(0.5, 0)  # a program may change its circuit between steps: new bytes, decoded anew
    worked.serve([step(changed, [0.1] * 4, "job-a"), step(circuit, [0.1] * 4, "job-a")])
    assert len(decodes) == 3


def test_a_run_within_its_budget_simulates_without_waiting_for_go() -> None:
    circuit = ansatz()
    worked = Worked()
    # Within its budget the worker must not read the next frame as its GO (it would stop: "expected GO").
    answers = worked.serve([step(circuit, [0.1] * 4, "job-a"), step(circuit, [0.2] * 4, "job-a")])
    assert [tag for tag, _ in answers] == [protocol.CHECKED, protocol.RAN] * 2
    # Without one it waits for GO after CHECKED, and the service's GO lets it simulate.
    answers = worked.serve([step(circuit, [0.1] * 4, "job-a", budget=0), protocol.GO])
    assert [tag for tag, _ in answers] == [protocol.CHECKED, protocol.RAN]
    with pytest.raises(SystemExit, match="expected GO"):
        worked.serve([step(circuit, [0.1] * 4, "job-a", budget=0), step(circuit, [0.1] * 4, "job-a")])


def test_the_cache_keeps_a_few_small_circuits_of_the_last_jobs_and_nothing_that_failed() -> None:
    decoded: list[bytes] = []

    def how(data: bytes) -> QuantumCircuit:
        decoded.append(data)
        if data == b"bad":
            raise ValueError("not QPY")
        return QuantumCircuit(len(data))

    cache = DecodedCircuits(max_jobs=2, per_job=2, max_qpy_bytes=8)
    for job, data in [("a", b"x"), ("a", b"x"), ("", b"x"), ("", b"x"), ("a", b"y"), ("a", b"z"), ("a", b"x")]:
        cache.decoder(job)(data, how)
    assert decoded == [b"x", b"x", b"x", b"y", b"z", b"x"]  # no job: nothing kept; two per job, oldest dropped
    for _ in range(2):
        with pytest.raises(ValueError, match="not QPY"):
            cache.decoder("a")(b"bad", how)
    cache.decoder("a")(b"large data", how)
    cache.decoder("a")(b"large data", how)
    assert decoded[-4:] == [b"bad", b"bad", b"large data", b"large data"]
    cache.decoder("b")(b"x", how)
    cache.decoder("c")(b"x", how)
    assert cache.jobs() == ["b", "c"]  # the last two jobs'
    assert cache.decoder("c")(b"x", lambda data: QuantumCircuit(5)).num_qubits == 5  # kept per decoding too
