"""The quick start through the real client against the four services on one real socket."""

from __future__ import annotations

import json

import pytest
from qruntime import IBMRuntimeService, JobStatus, ReferenceCircuits
from qruntime.exceptions import (
    AccountAlreadyExistsError,
    IBMInputValueError,
    IBMNotAuthorizedError,
    NotFoundError,
)

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


SIMULATOR = {"backend_name": "ibmq_qasm_simulator"}


@pytest.fixture
def suite(start_suite):
    return start_suite("programs", "devices", "jobs")


@pytest.fixture
def service(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    IBMRuntimeService.save_account(auth="cloud", token=suite.api_key, instance=suite.instance, url=suite.address,
                                   overwrite=True)
    with IBMRuntimeService() as service:
        yield service


def test_quick_start(service, tmp_path):
    saved = json.loads((tmp_path / "home" / ".qiskit" / "qiskit-ibm.json").read_text())
    assert list(saved.values())[0]["instance"] == service.instance

    assert "ibmq_qasm_simulator" in [b.name for b in service.backends()]

    job = service.run(program_id="hello-world", options=SIMULATOR, inputs={"iterations": 1})
    assert isinstance(job.job_id, str) and job.job_id
    assert job.status() in {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE}
    assert job.result() == "All done!"
    assert job.status() is JobStatus.DONE
    assert "Hello, World!" in job.logs()

    job = service.run(program_id="sampler", options=SIMULATOR, inputs={"circuits": ReferenceCircuits.bell()})
    quasi = job.result()["quasi_dists"][0]
    assert set(quasi) == {"00", "11"}
    assert abs(quasi["00"] - 0.5) < 0.1 and abs(sum(quasi.values()) - 1) < 1e-9


def test_save_account_refuses_to_replace_without_overwrite(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    IBMRuntimeService.save_account(auth="cloud", token=suite.api_key, instance=suite.instance, url=suite.address)
    with pytest.raises(AccountAlreadyExistsError):
        IBMRuntimeService.save_account(auth="cloud", token="other", instance="other", url=suite.address)


def test_wrong_api_key_is_refused_at_once(suite):
    with pytest.raises(IBMNotAuthorizedError) as caught:
        IBMRuntimeService(auth="cloud", token="qrk_00_wrong", instance=suite.instance, url=suite.address)
    assert caught.value.reason == "API_KEY_INVALID"


def test_unknown_program_and_backend_are_not_found(service):
    with pytest.raises(NotFoundError) as caught:
        service.run(program_id="no-such-program", options=SIMULATOR, inputs={})
    assert caught.value.reason == "PROGRAM_NOT_FOUND"
    with pytest.raises(NotFoundError) as caught:
        service.run(program_id="hello-world", options={"backend_name": "no_such_backend"}, inputs={"iterations": 1})
    assert caught.value.reason == "BACKEND_NOT_FOUND"


def test_malformed_inputs_name_each_field(service):
    with pytest.raises(IBMInputValueError) as caught:
        service.run(program_id="hello-world", options=SIMULATOR, inputs={"iterations": "many", "colour": 1})
    fields = {v.field for v in caught.value.field_violations}
    assert fields == {"inputs.iterations", "inputs.colour"}
    with pytest.raises(IBMInputValueError) as caught:
        service.run(program_id="sampler", options=SIMULATOR, inputs={})
    assert {v.field for v in caught.value.field_violations} == {"inputs.circuits"}


def test_lite_plan_cannot_use_a_physical_system(service):
    assert all(b.simulator for b in service.backends())
    with pytest.raises(IBMNotAuthorizedError) as caught:
        service.run(program_id="hello-world", options={"backend_name": "ibm_manila"}, inputs={"iterations": 1})
    assert caught.value.reason == "BACKEND_NOT_IN_PLAN"


def test_no_backend_named_picks_one_the_plan_allows(service):
    job = service.run(program_id="sampler", inputs={"circuits": ReferenceCircuits.bell(), "shots": 100})
    assert job.result()["metadata"][0]["shots"] == 100
    assert job.backend().name in {b.name for b in service.backends()}


def test_another_instance_cannot_see_the_job(suite, service):
    job = service.run(program_id="hello-world", options=SIMULATOR, inputs={"iterations": 1})
    other_key, other_crn = suite.make_user(instance_name="elsewhere")
    with IBMRuntimeService(auth="cloud", token=other_key, instance=other_crn, url=suite.address) as other:
        with pytest.raises(NotFoundError) as caught:
            other.job(job.job_id)
    assert caught.value.reason == "JOB_NOT_FOUND"
    job.result()
