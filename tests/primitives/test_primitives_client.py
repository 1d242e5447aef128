"""The client's primitives as Qiskit code uses them: modes (a backend, a Session or a Batch),
RuntimeJobV2's status strings, Qiskit's result containers, compiling with the backend's target."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2, PrimitiveResult
from qiskit.transpiler import generate_preset_pass_manager
from qruntime import Batch, EstimatorV2, ReferenceCircuits, RuntimeJobV2, SamplerV2, Session
from qruntime._bit_array import CountedBitArray
from qruntime.exceptions import IBMInputValueError

pytestmark = pytest.mark.slow


def test_they_are_qiskits_v2_primitives_and_their_job_speaks_v2(lite) -> None:
    backend = lite.backend("ibmq_qasm_simulator")
    sampler, estimator = SamplerV2(mode=backend), EstimatorV2(mode=backend)
    assert isinstance(sampler, BaseSamplerV2) and isinstance(estimator, BaseEstimatorV2)
    job = sampler.run([ReferenceCircuits.bell()], shots=100)
    assert isinstance(job, RuntimeJobV2) and job.primitive_id == "sampler" and job.session_id is None
    result = job.result(timeout=60)
    assert isinstance(result, PrimitiveResult) and job.status() == "DONE" and isinstance(job.status(), str)
    assert job.done() and not job.errored() and job.in_final_state() and job.job_id() == job.job_id
    assert sum(result[0].data.c.get_counts().values()) == 100 and result.metadata["backend"] == backend.name
    assert isinstance(result[0].data.c, CountedBitArray)  # Qiskit's BitArray, counted in numpy
    assert job.inputs.sampler.pubs[0].shots == 100 and job.inputs.sampler.pubs[0].circuit.qpy  # QPY, as sent


def test_pubs_past_one_message_go_up_in_chunks_and_the_jobs_inputs_come_back_whole(lite, monkeypatch) -> None:
    from qruntime import _uploads

    from qruntime_jobs import servicer, validation

    monkeypatch.setattr(_uploads, "MAX_MESSAGE_INPUTS_BYTES", 4096)  # the client's one-message limit
    monkeypatch.setattr(validation, "MAX_INPUTS_BYTES", 4096)  # the service's: the full view leaves them out
    monkeypatch.setattr(servicer, "INPUTS_CHUNK_BYTES", 3000)
    circuits = []
    for index in range(12):  # each PUB's outcome is its number in 2 bits
        circuit = QuantumCircuit(2, 2)
        for bit in range(2):
            if (index % 4) >> bit & 1:
                circuit.x(bit)
        circuit.measure([0, 1], [0, 1])
        circuits.append(circuit)
    job = SamplerV2(mode=lite.backend("ibmq_qasm_simulator")).run(circuits, shots=25)
    assert job.proto.omitted_inputs_bytes == 0  # the basic view says nothing of inputs
    result = job.result(timeout=60)
    assert [pub.data.c.get_counts() for pub in result] == [{format(i % 4, "02b"): 25} for i in range(12)]
    assert len(job.inputs.sampler.pubs) == 12 and job.inputs.sampler.pubs[11].circuit.qpy  # read back in chunks


def test_a_session_or_batch_mode_runs_its_jobs_on_its_backend_in_it(lite) -> None:
    backend = lite.backend("simulator_mps")
    with Session(backend=backend) as session:
        first = SamplerV2(mode=session).run([ReferenceCircuits.bell()], shots=10)
        assert (first.backend_name, first.session_id) == ("simulator_mps", session.session_id)
        assert first.result(timeout=60)[0].data.c.num_shots == 10
        inside = SamplerV2().run([ReferenceCircuits.bell()], shots=10)  # no mode: the enclosing session
        assert inside.session_id == session.session_id
    with Batch(backend=lite.backend("ibmq_qasm_simulator")) as batch:
        job = EstimatorV2(mode=batch).run([(ReferenceCircuits.bell().remove_final_measurements(inplace=False), "ZZ")])
        assert job.session_id == batch.session_id and job.result(timeout=60)[0].data.evs == pytest.approx(1.0)
    listed = lite.jobs(session_id=session.session_id)  # newest first
    assert [j.job_id for j in listed] == [inside.job_id(), first.job_id()]


def test_a_mode_that_is_no_backend_session_or_batch_is_refused(lite) -> None:
    with pytest.raises(IBMInputValueError) as info:
        SamplerV2(mode="ibmq_qasm_simulator").run([ReferenceCircuits.bell()])
    assert [v.field for v in info.value.field_violations] == ["mode"]


def test_circuits_compiled_with_the_backends_target_run_on_the_system(standard) -> None:
    backend = standard.backend("ibm_lima")
    ghz = QuantumCircuit(3)
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    ghz.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=2).run(ghz)
    counts = SamplerV2(mode=backend).run([isa], shots=2000).result(timeout=120)[0].data.meas.get_counts()
    assert counts.get("000", 0) + counts.get("111", 0) > 1600  # correlated, with the system's noise


def test_ibm_style_options_are_taken_and_the_ones_that_do_not_apply_are_named(lite) -> None:
    backend = lite.backend("ibmq_qasm_simulator")
    estimator = EstimatorV2(mode=backend)
    estimator.options.default_shots = 2000  # overrides default_precision, as IBM's
    estimator.options.simulator.seed_simulator = 3
    estimator.options.dynamical_decoupling.enable = True
    with pytest.warns(UserWarning, match=r"ignores them: dynamical_decoupling\.enable"):
        job = estimator.run([(ReferenceCircuits.bell().remove_final_measurements(inplace=False), "ZZ")])
    assert job.result(timeout=60)[0].metadata["shots"] == 2000 and job.inputs.estimator.options.seed == 3
    sampler = SamplerV2(mode=backend, options={"default_shots": 30, "twirling": {"enable_gates": True}})
    with pytest.warns(UserWarning, match=r"twirling\.enable_gates"):
        assert sampler.run([ReferenceCircuits.bell()]).result(timeout=60)[0].data.c.num_shots == 30
    with pytest.raises(IBMInputValueError):
        SamplerV2(mode=backend, options={"shots": 10})


def test_ibms_hello_world_tutorial_runs_with_only_its_imports_changed(standard) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "hello_world_v2.py"
    spec = importlib.util.spec_from_file_location("hello_world_v2", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    labels, values, errors = example.hello_world(standard, "ibm_manila")
    found = dict(zip(labels, values, strict=True))
    assert abs(found["ZZ"] - 1) < 0.1 and abs(found["XX"] - 1) < 0.15  # a Bell state, noisy, readout mitigated
    assert all(abs(found[label]) < 0.1 for label in ("IZ", "IX", "ZI", "XI"))
    assert all(0 < e < 0.05 for e in errors)
