"""The executor and the runner on a real SQLite store: outcomes, reasons, logs, time limits, cancellation."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest
import structlog
from qruntime.encoding import dumps, loads

from qruntime_jobs import runner as runner_module
from qruntime_jobs import store as store_module
from qruntime_jobs.backend import BackendError, SuiteError
from qruntime_jobs.builtin_programs import BUILTIN_PROGRAMS, program_logger
from qruntime_jobs.executor import JobExecutor
from qruntime_jobs.runner import ProgramRunner
from qruntime_jobs.store import FINAL_STATES, RUNNING, JobStore
from qruntime_kit.errors import InvalidArgument, Unavailable

log = program_logger("test")
stopped = threading.Event()  # set by the sleepy program when it noticed it must stop


def sleepy(backend, user_messenger, seconds=30):
    """Publishes every 20 ms until told to stop (cooperative: publish raises JobCancelled)."""
    stopped.clear()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            user_messenger.publish({"alive": True})
            time.sleep(0.02)
    finally:
        stopped.set()
    return "woke up"


def crash(backend, user_messenger):
    raise RuntimeError("boom")


def refused(backend, user_messenger):
    try:
        raise BackendError(InvalidArgument("shots must be 1..100", reason="INVALID_SHOTS"))
    except BackendError as err:
        raise ValueError("could not run") from err  # the program wraps it; the reason survives


def unreachable(backend, user_messenger):
    raise SuiteError("the devices service could not be used")


def chatty(backend, user_messenger):
    log.debug("debug line")
    log.info("info line")
    log.warning("warning line")
    return {1, 2}  # a set cannot be encoded


def bulky(backend, user_messenger, size):
    return "x" * size


PROGRAMS = {**BUILTIN_PROGRAMS, "sleepy": sleepy, "crash": crash, "refused": refused,
            "unreachable": unreachable, "chatty": chatty, "bulky": bulky}


class Harness:
    """An executor with fast polling over the store, running PROGRAMS on local Aer backends."""

    def __init__(self, store: JobStore, local_backend_class) -> None:
        self.store = store

        def backend_for(job, control):
            backend = local_backend_class()
            run = backend.run

            def checked_run(*args, **kwargs):
                control.check()
                return run(*args, **kwargs)

            backend.run = checked_run
            return backend

        self.executor = JobExecutor(store, ProgramRunner(store, backend_for, PROGRAMS), workers=2,
                                    lease_seconds=1.0, poll_seconds=0.05, heartbeat_seconds=0.1)

    def submit(self, program_id: str, inputs=None, limit: float = 60, runtime: str = "BUILTIN",
               log_level: str = "INFO"):
        job, _ = self.store.create(
            instance="crn:a", owner="u", program_id=program_id, runtime=runtime, backend="local_aer",
            inputs=inputs if isinstance(inputs, str) else dumps(inputs or {}), log_level=log_level,
            max_execution_seconds=limit, request_id="", trace_id=f"trace-{program_id}",
        )
        self.executor.wake()
        return job

    async def until(self, job_id: str, states=FINAL_STATES, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while (job := await asyncio.to_thread(self.store.get, job_id)).state not in states:
            assert time.monotonic() < deadline, f"job still {job.state}"
            await asyncio.sleep(0.02)
        return job


def run(store, local_backend_class, scenario):
    async def main():
        harness = Harness(store, local_backend_class)
        await harness.executor.start()
        try:
            return await scenario(harness)
        finally:
            await harness.executor.stop()

    return asyncio.run(main())


def test_a_sampler_job_ends_done_with_its_result(store, local_backend_class, bell):
    async def scenario(h):
        job = h.submit("sampler", {"circuits": [bell], "shots": 500, "seed": 1})
        return await h.until(job.id)

    job = run(store, local_backend_class, scenario)
    assert (job.state, job.reason) == ("DONE", "")
    assert job.start_time <= job.end_time
    result = loads(store.get_result(job.id))
    assert set(result["counts"][0]) == {"00", "11"} and result["metadata"] == [{"shots": 500}]


def test_hello_world_stores_interim_results_and_logs(store, local_backend_class):
    async def scenario(h):
        return await h.until(h.submit("hello-world", {"iterations": 2}).id)

    job = run(store, local_backend_class, scenario)
    assert loads(store.get_result(job.id)) == "All done!"
    interim, _ = store.list_interim_results(job.id, page_size=10)
    assert [loads(r.data)["iteration"] for r in interim] == [0, 1]
    logs, _ = store.list_logs(job.id, page_size=10)
    assert logs[0].message == "Hello, World!" and logs[0].level == "INFO"


@pytest.mark.parametrize(
    ("program_id", "inputs", "reason", "words"),
    [
        ("crash", {}, "PROGRAM_ERROR", "RuntimeError: boom"),
        ("refused", {}, "BACKEND_ERROR", "INVALID_SHOTS"),
        ("unreachable", {}, "INTERNAL_ERROR", "could not be used"),
        ("chatty", {}, "PROGRAM_ERROR", "cannot be encoded"),
        ("sampler", '{"circuits": {"__type__": "QuantumCircuit", "__value__": "bm90IHFweQ=="}}',
         "INVALID_INPUT", "could not be decoded"),
        ("sampler", {"circuits": [], "colour": "blue"}, "INVALID_INPUT", "colour"),
        ("sampler", {"circuits": []}, "INVALID_INPUT", "empty"),
        ("no-such-builtin", {}, "RUNTIME_UNAVAILABLE", "no built-in program"),
    ],
)
def test_failures_end_in_error_with_a_typed_reason(store, local_backend_class, program_id, inputs, reason, words):
    async def scenario(h):
        return await h.until(h.submit(program_id, inputs).id)

    job = run(store, local_backend_class, scenario)
    assert (job.state, job.reason) == ("ERROR", reason)
    assert words in job.reason_message
    assert store.get_result(job.id) is None


def test_a_result_too_large_to_read_back_ends_the_job_in_error(store, local_backend_class, monkeypatch):
    monkeypatch.setattr(runner_module, "MAX_RESULT_BYTES", 1000)

    async def scenario(h):
        return await h.until(h.submit("bulky", {"size": 998}).id), await h.until(h.submit("bulky", {"size": 999}).id)

    fits, too_large = run(store, local_backend_class, scenario)
    assert fits.state == "DONE" and len(store.get_result(fits.id)) == 1000  # with its quotes
    assert (too_large.state, too_large.reason) == ("ERROR", "PROGRAM_ERROR")
    assert "1001 bytes" in too_large.reason_message and store.get_result(too_large.id) is None


def test_uploaded_python_programs_need_the_sandboxed_runner(store, local_backend_class):
    async def scenario(h):
        return await h.until(h.submit("doubler-abc123", {}, runtime="PYTHON").id)

    job = run(store, local_backend_class, scenario)
    assert (job.state, job.reason) == ("ERROR", "RUNTIME_UNAVAILABLE")
    assert "sandboxed runner" in job.reason_message


def test_only_lines_at_the_job_log_level_are_stored(store, local_backend_class):
    async def scenario(h):
        quiet = h.submit("chatty", log_level="WARNING")
        loud = h.submit("chatty", log_level="DEBUG")
        return await h.until(quiet.id), await h.until(loud.id)

    quiet, loud = run(store, local_backend_class, scenario)
    quiet_logs = [(e.level, e.message) for e in store.list_logs(quiet.id, page_size=50)[0]]
    assert quiet_logs[0] == ("WARNING", "warning line") and quiet_logs[1][0] == "ERROR"
    loud_levels = [e.level for e in store.list_logs(loud.id, page_size=50)[0]]
    assert loud_levels == ["DEBUG", "INFO", "WARNING", "ERROR"]


def test_a_job_past_its_time_limit_ends_and_its_program_is_told_to_stop(store, local_backend_class):
    async def scenario(h):
        job = h.submit("sleepy", {"seconds": 30}, limit=0.3)
        ended = await h.until(job.id)
        assert await asyncio.to_thread(stopped.wait, 5)
        return ended

    job = run(store, local_backend_class, scenario)
    assert (job.state, job.reason) == ("ERROR", "TIME_LIMIT_EXCEEDED")
    assert "0.3 seconds" in job.reason_message
    assert (job.end_time - job.start_time).total_seconds() < 5


def test_cancelling_a_running_job_stops_its_program_and_it_stays_cancelled(store, local_backend_class):
    async def scenario(h):
        job = h.submit("sleepy", {"seconds": 30})
        await h.until(job.id, states=(RUNNING,))
        await asyncio.to_thread(h.store.cancel, job.id)
        h.executor.cancel(job.id)
        assert await asyncio.to_thread(stopped.wait, 5)
        await asyncio.sleep(0.2)
        return await h.until(job.id)

    job = run(store, local_backend_class, scenario)
    assert (job.state, job.reason) == ("CANCELLED", "CANCELLED_BY_USER")


def test_a_job_cancelled_through_another_replica_is_stopped_at_the_next_claim_renewal(store, local_backend_class):
    async def scenario(h):
        job = h.submit("sleepy", {"seconds": 30})
        await h.until(job.id, states=(RUNNING,))
        await asyncio.to_thread(h.store.cancel, job.id)  # not telling this executor
        assert await asyncio.to_thread(stopped.wait, 5)
        return await h.until(job.id)

    assert run(store, local_backend_class, scenario).state == "CANCELLED"


def test_stopping_requeues_running_jobs_and_starting_runs_them(store, local_backend_class):
    async def first(h):
        job = h.submit("sleepy", {"seconds": 30})
        await h.until(job.id, states=(RUNNING,))
        return job

    job = run(store, local_backend_class, first)
    assert store.get(job.id).state == "QUEUED"

    async def second(h):
        return await h.until(job.id, states=(RUNNING,))

    assert run(store, local_backend_class, second).state == RUNNING


def test_a_job_of_a_dead_replica_is_requeued_after_its_lease(store, local_backend_class, bell):
    job, _ = store.create(instance="crn:a", owner="u", program_id="sampler", runtime="BUILTIN",
                          backend="local_aer", inputs=dumps({"circuits": bell}), log_level="INFO",
                          max_execution_seconds=60)
    store.claim_next_queued("a-replica-that-dies-now")

    async def scenario(h):
        return await h.until(job.id, timeout=10)

    assert run(store, local_backend_class, scenario).state == "DONE"


def lines_about(logs, event: str) -> list[dict]:
    return [line for line in logs if line["event"] == event]


def test_requeued_jobs_are_logged_each_with_its_job_id_and_request_id(store, local_backend_class, bell):
    job, _ = store.create(instance="crn:a", owner="u", program_id="sampler", runtime="BUILTIN",
                          backend="local_aer", inputs=dumps({"circuits": bell}), log_level="INFO",
                          max_execution_seconds=60, trace_id="trace-of-create")
    store.claim_next_queued("a-replica-that-died-a-minute-ago")
    with store._engine.begin() as conn:
        conn.execute(store_module.job_table.update().values(
            heartbeat_time=store_module.utcnow() - dt.timedelta(seconds=60)))

    async def scenario(h):
        return await h.until(job.id)

    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        assert run(store, local_backend_class, scenario).state == "DONE"
    [requeued] = lines_about(logs, "requeued the job of a replica that stopped")
    assert (requeued["job_id"], requeued["request_id"]) == (job.id, "trace-of-create")


def test_a_failure_to_store_the_outcome_is_logged_with_the_jobs_ids(store, local_backend_class, monkeypatch):
    def broken_finish(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(store, "finish", broken_finish)

    async def scenario(h):
        job = h.submit("hello-world", {"iterations": 0})
        job = store.get(job.id)
        for _ in range(500):
            if lines_about(logs, "could not store how the job ended"):
                return job
            await asyncio.sleep(0.01)
        raise AssertionError("the failure was not logged")

    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        job = run(store, local_backend_class, scenario)
    [failed] = lines_about(logs, "could not store how the job ended")
    assert (failed["job_id"], failed["request_id"]) == (job.id, job.trace_id) and failed["exc_info"]
    assert store.get(job.id).state == "QUEUED"  # requeued at stop, to run again


def test_the_servicer_answers_unavailable_before_start():
    from qruntime_jobs.servicer import JobsServicer

    with pytest.raises(Unavailable):
        JobsServicer().deps  # noqa: B018
