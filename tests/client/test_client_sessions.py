"""Session and Batch, job listing filters and backend filters of the client, against the real suite."""

from __future__ import annotations

import datetime as dt

import pytest
from client_support import LITE_SIMULATORS
from qruntime import Batch, IBMRuntimeService, ReferenceCircuits, Session
from qruntime._session import current_session
from qruntime.exceptions import (
    FailedPreconditionError,
    IBMInputValueError,
    IBMRuntimeError,
    NotFoundError,
)

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow

BACKEND = "simulator_statevector"


def bell_job(service: IBMRuntimeService, **kwargs):
    return service.run("sampler", {"circuits": ReferenceCircuits.bell(), "shots": 100}, **kwargs)


def test_a_session_as_a_context_manager_runs_jobs_and_closes(service) -> None:
    backend = service.backend(BACKEND)
    assert backend.service is service
    with Session(backend=backend, max_time="1h 30m") as session:
        assert current_session() is session
        assert (session.backend_name, session.backend(), session.service) == (BACKEND, BACKEND, service)
        assert session.status() == "Pending"
        first = session.run("sampler", {"circuits": ReferenceCircuits.bell(), "shots": 100})
        second = bell_job(service, session_id=session.session_id)
        assert first.session_id == second.session_id == session.session_id
        assert sum(first.result()["counts"][0].values()) == 100 and second.result()
        details = session.details()
        assert details["id"] == session.session_id and details["backend_name"] == BACKEND
        assert (details["mode"], details["state"], details["accepting_jobs"]) == ("dedicated", "active", True)
        assert (details["max_time"], details["interactive_timeout"]) == (5400, 60)
        assert details["started_at"] <= details["last_job_started"] <= details["last_job_completed"]
        assert details["closed_at"] is None and details["usage_time"] > 0
        assert session.status() == "In progress, accepting new jobs"
        assert sorted(j.job_id for j in service.jobs(session_id=session.session_id)) == sorted(
            [first.job_id, second.job_id])
        assert service.job(first.job_id).session_id == session.session_id
    assert current_session() is None
    assert session.status() == "Closed" and session.details()["closed_at"] is not None
    with pytest.raises(IBMRuntimeError, match="The session is closed."):
        session.run("sampler", {"circuits": ReferenceCircuits.bell()})
    with pytest.raises(FailedPreconditionError) as caught:  # the service refuses it too
        bell_job(service, session_id=session.session_id)
    assert caught.value.reason == "SESSION_NOT_ACCEPTING_JOBS"
    assert bell_job(service).session_id is None


def test_from_id_finds_a_session_and_checks_its_mode(service) -> None:
    session = Session(BACKEND, service=service, interactive_timeout=5)
    again = Session.from_id(session.session_id, service)
    assert again.session_id == session.session_id and again.details()["interactive_timeout"] == 5
    job = again.run("sampler", {"circuits": ReferenceCircuits.bell(), "shots": 10})
    assert job.session_id == session.session_id
    with pytest.raises(IBMInputValueError, match="has execution mode dedicated instead of batch"):
        Batch.from_id(session.session_id, service)
    with pytest.raises(NotFoundError):
        Session.from_id("0" * 20, service)
    again.cancel()
    assert Session.from_id(session.session_id, service).status() == "Closed"
    with pytest.raises(IBMRuntimeError):
        Session.from_id(session.session_id, service).run("sampler", {"circuits": ReferenceCircuits.bell()})


def test_a_batch_runs_jobs_and_reports_their_usage(service) -> None:
    with Batch(backend=service.backend(BACKEND)) as batch:
        jobs = [batch.run("sampler", {"circuits": ReferenceCircuits.bell(), "shots": 10}) for _ in range(3)]
        for job in jobs:
            job.result()
        assert batch.details()["mode"] == "batch"
        assert batch.usage() == pytest.approx(sum(job.metrics()["usage"]["seconds"] for job in jobs))
    assert batch.status() == "Closed"


def test_cancel_cancels_the_sessions_jobs(service) -> None:
    session = Session(service=service)  # the least busy backend
    assert session.backend_name in LITE_SIMULATORS
    job = session.run("hello-world", {"iterations": 30})
    session.cancel()
    assert job.status() == "CANCELLED" and session.status() == "Closed"
    assert session.details()["close_reason"] == "cancelled by the user"


def test_bad_session_arguments_fail_typed(service) -> None:
    for kwargs in ({"max_time": "soon"}, {"max_time": -5}, {"interactive_timeout": 0}):
        with pytest.raises(IBMInputValueError):
            Session(BACKEND, service=service, **kwargs)
    with pytest.raises(IBMInputValueError) as caught:  # the service's rule: at most 8 hours
        Session(BACKEND, service=service, max_time="9h")
    assert caught.value.reason == "INVALID_SESSION_TIME"
    with pytest.raises(IBMInputValueError):
        Session(BACKEND)  # a name alone does not say which service
    with pytest.raises(NotFoundError):
        Session("nope", service=service)


def test_jobs_are_listed_with_qiskit_runtimes_filters(service) -> None:
    before = dt.datetime.now(dt.UTC)
    first = bell_job(service, options={"backend_name": "simulator_mps"}, job_tags=["a", "b"])
    second = bell_job(service, options={"backend_name": BACKEND}, job_tags=["a"])
    third = service.run("hello-world", {"iterations": 1}, {"backend_name": BACKEND})
    for job in (first, second, third):
        job.wait_for_final_state()
    ids = [third.job_id, second.job_id, first.job_id]

    def listed(**kwargs) -> list[str]:
        return [job.job_id for job in service.jobs(**kwargs)]

    assert listed() == ids
    assert listed(skip=1) == ids[1:] and listed(skip=1, limit=1) == ids[1:2] and listed(skip=5) == []
    assert listed(backend_name=BACKEND) == ids[:2]
    assert listed(program_id="hello-world") == ids[:1]
    assert listed(job_tags=["a"]) == ids[1:] and listed(job_tags=["a", "b"]) == ids[2:]
    assert listed(created_after=before) == ids and listed(created_before=before) == []
    middle = service.job(second.job_id).creation_date
    assert listed(created_after=middle) == ids[:1] and listed(created_before=middle) == ids[2:]
    assert listed(pending=False, backend_name=BACKEND, program_id="sampler") == ids[1:2]
    assert listed(instance=service.instance) == ids
    with pytest.raises(IBMInputValueError):
        service.jobs(instance="crn:v1:elsewhere")
    with pytest.raises(IBMInputValueError):
        service.jobs(skip=-1)


def test_backends_and_least_busy_take_filters(service) -> None:
    assert [b.name for b in service.backends(filters=lambda b: b.num_qubits >= 32 and "mps" in b.name)] == [
        "simulator_mps"]
    assert [b.name for b in service.backends(simulator=True, operational=True)] == LITE_SIMULATORS
    assert service.backends(simulator=False) == []
    assert [b.name for b in service.backends(simulation_method="matrix_product_state")] == ["simulator_mps"]
    assert service.least_busy(filters=lambda b: b.name == BACKEND).name == BACKEND
    assert service.least_busy(simulator=True, min_num_qubits=2).simulator
    with pytest.raises(NotFoundError):
        service.least_busy(simulator=False)
    with pytest.raises(IBMInputValueError):
        service.backends(no_such_attribute=1)
