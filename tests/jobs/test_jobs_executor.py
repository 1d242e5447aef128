"""The executor and the runner on a real SQLite store, with programs in real host processes:
outcomes, reasons, logs, time limits, cancellation, dead workers, attempts and output caps.

Test programs are sources run like uploaded programs, by hosts without the sandbox (the sandbox's
own tests are tests/kit/test_sandbox.py and tests/e2e/test_hostile_programs.py). Circuits run on
LocalDevices, a test double of the devices service's two calls the runner makes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import textwrap
import time

import pytest
import structlog
from process_support import alive
from qiskit import transpile
from qiskit_aer import AerSimulator
from qruntime.devices.v1 import backend_pb2, devices_service_pb2
from qruntime.encoding import dumps, load_circuits_qpy, loads

from qruntime_jobs import executor as executor_module
from qruntime_jobs import runner as runner_module
from qruntime_jobs import store as store_module
from qruntime_jobs.backend import BackendError, SuiteError
from qruntime_jobs.executor import JobExecutor
from qruntime_jobs.hosts import HostPool
from qruntime_jobs.runner import OutputLimits, ProgramRunner
from qruntime_jobs.store import FINAL_STATES, RUNNING, JobStore
from qruntime_kit.errors import InvalidArgument, NotFound, Unavailable
from qruntime_kit.limits import Limits, create_cgroup

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


PROGRAMS = {
    "sleepy": """
        import os, signal, time
        def main(backend, user_messenger, seconds=30):
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # only SIGKILL can stop it
            user_messenger.publish({"pid": os.getpid()})
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                pass
            return "woke up"
    """,
    "crash": """
        def main(backend, user_messenger):
            raise RuntimeError("boom")
    """,
    "refused": """
        from qiskit import QuantumCircuit
        def main(backend, user_messenger):
            circuit = QuantumCircuit(1, 1)
            circuit.measure(0, 0)
            try:
                backend.run(circuit, shots=10**6)
            except Exception as err:
                raise ValueError("could not run") from err  # the program wraps it; the reason survives
    """,
    "one-circuit": """
        from qiskit import QuantumCircuit
        def main(backend, user_messenger):
            circuit = QuantumCircuit(1, 1)
            circuit.measure(0, 0)
            return backend.run(circuit, shots=10)[0]["counts"]
    """,
    "chatty": """
        import logging
        log = logging.getLogger("chatty")
        def main(backend, user_messenger):
            log.debug("debug line")
            log.info("info line")
            log.warning("warning line")
            return {1, 2}  # a set cannot be encoded
    """,
    "bulky": """
        def main(backend, user_messenger, size):
            return "x" * size
    """,
    "dies": """
        import os, signal
        def main(backend, user_messenger):
            os.kill(os.getpid(), signal.SIGKILL)
    """,
    "greedy": """
        def main(backend, user_messenger):
            block = bytearray(1 << 30)
            for i in range(0, len(block), 4096):
                block[i] = 1
    """,
    "loud": """
        import sys
        def main(backend, user_messenger):
            line = "x" * 1000 + "\\n"
            for _ in range(1_000_000):  # 1 GB
                sys.stdout.write(line)
    """,
    "eager": """
        def main(backend, user_messenger):
            for i in range(10_000):
                user_messenger.publish(i)
    """,
    "chatter": """
        import os, time
        def main(backend, user_messenger):
            user_messenger.publish({"pid": os.getpid()})
            while True:
                print("still here", flush=True)
                time.sleep(0.005)
    """,
    "printer": """
        import sys
        def main(backend, user_messenger):
            print("to stdout")
            print("to stderr", file=sys.stderr)
            return 1
    """,
}
MiB = 1 << 20


class LocalDevices:
    """A TEST DOUBLE of the two devices calls the runner makes, running circuits on a local Aer
    simulator. shots=10**6 is refused like the devices service refuses it; while `down`, every call
    fails as if the devices service could not be reached. The servicer and e2e tests use the real devices service."""

    def __init__(self) -> None:
        self.calls: list[devices_service_pb2.RunCircuitsRequest] = []
        self.down = False
        self._simulator = AerSimulator()

    async def backend(self, name: str, *, timeout: float) -> backend_pb2.Backend:
        return backend_pb2.Backend(name=name, configuration=backend_pb2.BackendConfiguration(
            num_qubits=8, max_shots=100_000))

    async def run_circuits(self, request, *, timeout: float):
        self.calls.append(request)
        if request.shots == 10**6:
            raise BackendError(InvalidArgument("shots must be 1..100000", reason="INVALID_SHOTS"))
        if self.down:
            raise SuiteError("the devices service could not be used (UPSTREAM_UNAVAILABLE): connection refused")
        return await asyncio.to_thread(self._run, request)

    def _run(self, request):
        circuits = load_circuits_qpy(request.circuits_qpy)
        for i, circuit in enumerate(circuits):  # as the devices service checks them
            if "measure" not in circuit.count_ops():
                raise BackendError(InvalidArgument(f"circuit {i} measures nothing", reason="NO_MEASUREMENTS"))
        circuits = [transpile(c, self._simulator) for c in circuits]
        seed = request.seed if request.HasField("seed") else None
        result = self._simulator.run(circuits, shots=request.shots, seed_simulator=seed).result()
        return devices_service_pb2.RunCircuitsResponse(results=[
            backend_pb2.CircuitResult(counts=result.get_counts(i), register_names=[r.name for r in reversed(c.cregs)])
            for i, c in enumerate(circuits)
        ])


class Harness:
    """An executor with fast polling over the store, its programs in host processes."""

    def __init__(
        self, store: JobStore, *, sandboxed: bool = True, max_attempts: int = 2, lease_seconds: float = 1.0,
        heartbeat_seconds: float = 0.1,
    ) -> None:
        self.store = store
        self.devices = LocalDevices()
        limits = Limits(memory_bytes=512 * MiB, max_processes=64)
        self.pools = [HostPool(sandboxed=False, warm=1, limits=limits) for _ in range(2)]

        self.programs_down = False

        async def fetch_source(job):
            if job.program_id == "deleted":
                raise NotFound("program 'deleted' not found", reason="PROGRAM_NOT_FOUND")
            if self.programs_down:
                raise Unavailable("connection refused", reason="UPSTREAM_UNAVAILABLE")
            return textwrap.dedent(PROGRAMS[job.program_id])

        runner = ProgramRunner(
            store, self.devices, trusted=self.pools[0], sandboxed=self.pools[1] if sandboxed else None,
            sandbox_problem="bubblewrap is not installed", fetch_source=fetch_source,
            limits=OutputLimits(log_bytes=MiB, interim_results=100, interim_bytes=MiB),
        )
        self.executor = JobExecutor(store, runner, workers=2, lease_seconds=lease_seconds, poll_seconds=0.05,
                                    heartbeat_seconds=heartbeat_seconds, max_attempts=max_attempts)

    def submit(self, program_id: str, inputs=None, limit: float = 60, log_level: str = "INFO", limit_source="",
               instance: str = "crn:a"):
        runtime = "PYTHON" if program_id in PROGRAMS or program_id == "deleted" else "BUILTIN"
        job, _ = self.store.create(
            instance=instance, owner="u", program_id=program_id, runtime=runtime, backend="local_aer",
            inputs=inputs if isinstance(inputs, str) else dumps(inputs or {}), log_level=log_level,
            max_execution_seconds=limit, request_id="", trace_id=f"trace-{program_id}", time_limit_source=limit_source,
        )
        self.executor.wake()
        return job

    async def until(self, job_id: str, states=FINAL_STATES, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while (job := await asyncio.to_thread(self.store.get, job_id)).state not in states:
            assert time.monotonic() < deadline, f"job still {job.state}"
            await asyncio.sleep(0.02)
        return job

    async def warm(self) -> None:
        """Wait until every pool has a host started, so a job's time counts no start-up."""
        while any(pool._ready.empty() for pool in self.pools):
            await asyncio.sleep(0.05)

    async def pid_of(self, job_id: str) -> int:
        """The pid a program published first (sleepy does)."""
        for _ in range(1500):
            results, _ = await asyncio.to_thread(self.store.list_interim_results, job_id, page_size=1)
            if results:
                return loads(results[0].data)["pid"]
            await asyncio.sleep(0.02)
        raise AssertionError("the program published nothing")


def run(store, scenario, **harness):
    async def main():
        h = Harness(store, **harness)
        for pool in h.pools:
            pool.start()
        await h.executor.start()
        try:
            return await scenario(h)
        finally:
            await h.executor.stop()
            for pool in h.pools:
                await pool.stop()

    return asyncio.run(main())


def test_the_sampler_runs_one_circuit_without_a_host_and_ends_as_in_one(store, bell):
    """direct.py's sampling agrees with the host's sampler.py: same seed, same result, same logs."""
    unmeasured = bell.remove_final_measurements(inplace=False)

    async def scenario(h):
        direct = h.submit("sampler", {"circuits": bell, "shots": 300, "seed": 5})
        hosted = h.submit("sampler", {"circuits": [bell], "shots": 300, "seed": 5, "circuit_indices": [0]})
        bad = [h.submit("sampler", {"circuits": [unmeasured], **extra}) for extra in ({}, {"circuit_indices": [0]})]
        return [await h.until(job.id) for job in (direct, hosted, *bad)]

    direct, hosted, *bad = run(store, scenario)
    assert store.get_result(direct.id) == store.get_result(hosted.id)
    assert loads(store.get_result(direct.id))["metadata"] == [{"shots": 300}]

    def lines(job):
        return [(e.level, e.message) for e in store.list_logs(job.id, page_size=50)[0]]

    assert lines(direct) == lines(hosted) and lines(direct)[0][1].startswith("sampling 1 circuit(s), 300 shots")
    assert [(j.state, j.reason) for j in bad] == [("ERROR", "INVALID_INPUT")] * 2


def test_a_sampler_job_ends_done_with_its_result(store, bell):
    async def scenario(h):
        job = h.submit("sampler", {"circuits": [bell], "shots": 500, "seed": 1})
        return await h.until(job.id)

    job = run(store, scenario)
    assert (job.state, job.reason, job.attempts) == ("DONE", "", 1)
    assert job.start_time <= job.end_time
    result = loads(store.get_result(job.id))
    assert set(result["counts"][0]) == {"00", "11"} and result["metadata"] == [{"shots": 500}]


def test_device_calls_are_scoped_to_the_job(store, bell):
    async def scenario(h):
        job = h.submit("sampler", {"circuits": [bell], "shots": 100})
        await h.until(job.id)
        return job, h.devices.calls

    job, calls = run(store, scenario)
    [call] = calls
    assert (call.backend, call.job_id, call.shots) == ("local_aer", job.id, 100)


def test_hello_world_stores_interim_results_and_logs(store):
    async def scenario(h):
        return await h.until(h.submit("hello-world", {"iterations": 2}).id)

    job = run(store, scenario)
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
        ("chatty", {}, "PROGRAM_ERROR", "cannot be encoded"),
        ("sampler", '{"circuits": {"__type__": "QuantumCircuit", "__value__": "bm90IHFweQ=="}, "circuit_indices": [0]}',
         "INVALID_INPUT", "could not be decoded"),
        ("sampler", {"circuits": [], "colour": "blue"}, "INVALID_INPUT", "colour"),
        ("sampler", {"circuits": []}, "INVALID_INPUT", "empty"),
        ("no-such-builtin", {}, "RUNTIME_UNAVAILABLE", "no built-in program"),
        ("deleted", {}, "PROGRAM_DELETED", "was deleted before the job ran"),
    ],
)
def test_failures_end_in_error_with_a_typed_reason(store, program_id, inputs, reason, words):
    async def scenario(h):
        return await h.until(h.submit(program_id, inputs).id)

    job = run(store, scenario)
    assert (job.state, job.reason) == ("ERROR", reason)
    assert words in job.reason_message
    assert store.get_result(job.id) is None


def test_a_result_too_large_to_read_back_ends_the_job_in_error(store, monkeypatch):
    monkeypatch.setattr(runner_module, "MAX_RESULT_BYTES", 1000)

    async def scenario(h):
        return await h.until(h.submit("bulky", {"size": 998}).id), await h.until(h.submit("bulky", {"size": 999}).id)

    fits, too_large = run(store, scenario)
    assert fits.state == "DONE" and len(store.get_result(fits.id)) == 1000  # with its quotes
    assert (too_large.state, too_large.reason) == ("ERROR", "PROGRAM_ERROR")
    assert "1001 bytes" in too_large.reason_message and store.get_result(too_large.id) is None


def test_uploaded_programs_do_not_run_without_the_sandbox(store):
    async def scenario(h):
        return await h.until(h.submit("crash").id)

    job = run(store, scenario, sandboxed=False)
    assert (job.state, job.reason) == ("ERROR", "RUNTIME_UNAVAILABLE")
    assert "cannot sandbox" in job.reason_message and "bubblewrap is not installed" in job.reason_message


def test_only_lines_at_the_job_log_level_are_stored(store):
    async def scenario(h):
        quiet = h.submit("chatty", log_level="WARNING")
        loud = h.submit("chatty", log_level="DEBUG")
        return await h.until(quiet.id), await h.until(loud.id)

    quiet, loud = run(store, scenario)
    quiet_logs = [(e.level, e.message) for e in store.list_logs(quiet.id, page_size=50)[0]]
    assert quiet_logs[0] == ("WARNING", "warning line") and quiet_logs[1][0] == "ERROR"
    loud_lines = [(e.level, e.message) for e in store.list_logs(loud.id, page_size=50)[0]]
    assert loud_lines[:3] == [("DEBUG", "debug line"), ("INFO", "info line"), ("WARNING", "warning line")]


def test_what_a_program_prints_becomes_its_logs(store):
    async def scenario(h):
        return await h.until(h.submit("printer").id)

    job = run(store, scenario)
    lines = {(e.level, e.message) for e in store.list_logs(job.id, page_size=50)[0]}
    assert {("INFO", "to stdout"), ("WARNING", "to stderr")} <= lines


def test_a_job_past_its_time_limit_is_killed_within_a_second(store):
    async def scenario(h):
        await h.warm()
        job = h.submit("sleepy", {"seconds": 60}, limit=1.5, limit_source="USER")
        pid = await h.pid_of(job.id)
        running = await asyncio.to_thread(h.store.get, job.id)
        assert running.deadline == running.start_time + dt.timedelta(seconds=1.5)
        ended = await h.until(job.id)
        await asyncio.sleep(0.1)
        return ended, pid

    job, pid = run(store, scenario)
    assert (job.state, job.reason) == ("ERROR", "TIME_LIMIT_EXCEEDED")
    assert "1.5 seconds (the limit the job asked for)" in job.reason_message and job.deadline is None
    assert (job.end_time - job.start_time).total_seconds() < 2.5
    assert not alive(pid)


def test_cancelling_a_running_job_kills_its_program_at_once(store):
    async def scenario(h):
        job = h.submit("sleepy", {"seconds": 60})
        pid = await h.pid_of(job.id)
        await asyncio.to_thread(h.store.cancel, job.id)
        h.executor.cancel(job.id)
        started = time.monotonic()
        while alive(pid):
            assert time.monotonic() - started < 1.0, "the program outlived its cancellation by a second"
            await asyncio.sleep(0.01)
        return await h.until(job.id)

    job = run(store, scenario)
    assert (job.state, job.reason) == ("CANCELLED", "CANCELLED_BY_USER")


def test_a_job_cancelled_through_another_replica_is_stopped_at_the_next_claim_renewal(store):
    async def scenario(h):
        job = h.submit("sleepy", {"seconds": 60})
        pid = await h.pid_of(job.id)
        await asyncio.to_thread(h.store.cancel, job.id)  # not telling this executor
        for _ in range(100):
            if not alive(pid):
                return await h.until(job.id)
            await asyncio.sleep(0.05)
        raise AssertionError("the program was not stopped")

    assert run(store, scenario).state == "CANCELLED"


def test_a_job_cancelled_elsewhere_takes_no_more_logs_and_its_program_stops_at_its_next_write(store):
    async def scenario(h):
        job = h.submit("chatter")
        pid = await h.pid_of(job.id)
        while not (await asyncio.to_thread(h.store.list_logs, job.id, page_size=1))[0]:  # it is chattering
            await asyncio.sleep(0.01)
        await asyncio.to_thread(h.store.cancel, job.id)  # through another replica: this one is not told
        logged = len((await asyncio.to_thread(h.store.list_logs, job.id, page_size=10_000))[0])
        started = time.monotonic()
        while alive(pid):  # the lease is renewed every 30 s: only the refused write can stop it this soon
            assert time.monotonic() - started < 2.0, "the program was not stopped by its refused write"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        after = len((await asyncio.to_thread(h.store.list_logs, job.id, page_size=10_000))[0])
        return logged, after, await h.until(job.id)

    logged, after, job = run(store, scenario, lease_seconds=90, heartbeat_seconds=30)
    assert logged > 0 and after == logged, "lines the program printed after its cancel were stored"
    assert job.state == "CANCELLED"


def test_a_job_whose_devices_are_down_waits_without_using_its_attempts_and_runs_when_they_are_back(
        store, monkeypatch):
    monkeypatch.setattr(executor_module, "BACKOFF_SECONDS", (0.05, 0.2))

    async def scenario(h):
        h.devices.down = True
        job = h.submit("one-circuit")
        while (await asyncio.to_thread(h.store.get, job.id)).dependency_waits < 4:  # twice max_attempts
            await asyncio.sleep(0.02)
        assert (await asyncio.to_thread(h.store.get, job.id)).state in ("QUEUED", "RUNNING")
        h.devices.down = False
        return await h.until(job.id)

    job = run(store, scenario)
    assert (job.state, job.failed_attempts) == ("DONE", 1) and job.attempts >= 5
    assert loads(store.get_result(job.id)) == {"0": 10}
    logs, _ = store.list_logs(job.id, page_size=100)
    waits = [line.message for line in logs if "goes back to the queue" in line.message]
    assert len(waits) >= 4 and all("the devices service could not be used" in m for m in waits)


def test_a_job_whose_program_source_cannot_be_fetched_waits_in_the_queue(store, monkeypatch):
    monkeypatch.setattr(executor_module, "BACKOFF_SECONDS", (0.05, 0.2))

    async def scenario(h):
        h.programs_down = True
        job = h.submit("printer")
        while (await asyncio.to_thread(h.store.get, job.id)).dependency_waits < 3:
            await asyncio.sleep(0.02)
        h.programs_down = False
        return await h.until(job.id)

    job = run(store, scenario)
    assert job.state == "DONE"
    logs, _ = store.list_logs(job.id, page_size=100)
    assert "the program's source could not be fetched: connection refused" in logs[0].message


def test_one_instance_flooding_the_queue_does_not_starve_another(store):
    async def scenario(h):
        flood = [h.submit("one-circuit", instance="crn:flood") for _ in range(16)]
        await h.until(flood[0].id, states=("RUNNING", "DONE"))
        mine = h.submit("one-circuit", instance="crn:quiet")
        await h.until(mine.id)
        waiting = [j for j in flood if (await asyncio.to_thread(h.store.get, j.id)).state == "QUEUED"]
        for job in flood:
            await h.until(job.id)
        return waiting

    waiting = run(store, scenario)
    assert len(waiting) >= 10, "the quiet instance's job waited behind the flood"


def test_a_worker_that_dies_is_retried_then_ends_with_its_reason(store):
    async def scenario(h):
        return await h.until(h.submit("dies").id)

    job = run(store, scenario)
    assert (job.state, job.reason, job.attempts) == ("ERROR", "WORKER_CRASHED", 2)
    assert "killed by signal SIGKILL" in job.reason_message
    lines = [e.message for e in store.list_logs(job.id, page_size=50)[0]]
    assert sum("back to the queue for attempt 2" in line for line in lines) == 1


@pytest.mark.skipif(create_cgroup("probe", Limits(memory_bytes=1 << 30)) is None, reason="no memory cgroup here")
def test_a_program_past_its_memory_limit_ends_out_of_memory(store):
    async def scenario(h):
        return await h.until(h.submit("greedy").id)

    job = run(store, scenario, max_attempts=1)
    assert (job.state, job.reason) == ("ERROR", "OUT_OF_MEMORY")
    assert "more memory than its limit" in job.reason_message


@pytest.mark.parametrize(("program_id", "words"), [("loud", "logged or printed"), ("eager", "interim results")])
def test_a_program_past_its_output_caps_is_stopped(store, program_id, words):
    async def scenario(h):
        return await h.until(h.submit(program_id).id, timeout=30)

    job = run(store, scenario)
    assert (job.state, job.reason) == ("ERROR", "OUTPUT_LIMIT_EXCEEDED")
    assert words in job.reason_message
    assert (job.end_time - job.start_time).total_seconds() < 10
    interim, _ = store.list_interim_results(job.id, page_size=1000)
    assert len(interim) <= 100


def test_a_job_started_too_often_ends_without_running_again(store, bell):
    job, _ = store.create(instance="crn:a", owner="u", program_id="sampler", runtime="BUILTIN",
                          backend="local_aer", inputs=dumps({"circuits": bell}), log_level="INFO",
                          max_execution_seconds=60)
    for replica in ("one", "two"):  # two replicas claimed it and died
        store.claim_next_queued(replica)
        store.requeue_running(runner=replica)

    async def scenario(h):
        return await h.until(job.id)

    ended = run(store, scenario)
    assert (ended.state, ended.reason, ended.attempts) == ("ERROR", "TOO_MANY_ATTEMPTS", 3)
    assert "started 2 times" in ended.reason_message


def test_stopping_requeues_running_jobs_and_starting_runs_them(store):
    async def first(h):
        job = h.submit("sleepy", {"seconds": 60})
        await h.pid_of(job.id)
        return job

    job = run(store, first)
    assert store.get(job.id).state == "QUEUED"

    async def second(h):
        return await h.until(job.id, states=(RUNNING,))

    assert run(store, second).state == RUNNING


def test_a_job_of_a_dead_replica_is_requeued_after_its_lease(store, bell):
    job, _ = store.create(instance="crn:a", owner="u", program_id="sampler", runtime="BUILTIN",
                          backend="local_aer", inputs=dumps({"circuits": bell}), log_level="INFO",
                          max_execution_seconds=60)
    store.claim_next_queued("a-replica-that-dies-now")

    async def scenario(h):
        return await h.until(job.id, timeout=20)

    assert run(store, scenario).state == "DONE"


def lines_about(logs, event: str) -> list[dict]:
    return [line for line in logs if line["event"] == event]


def test_requeued_jobs_are_logged_each_with_its_job_id_and_request_id(store, bell):
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
        assert run(store, scenario).state == "DONE"
    [requeued] = lines_about(logs, "requeued the job of a replica that stopped")
    assert (requeued["job_id"], requeued["request_id"]) == (job.id, "trace-of-create")


def test_a_failure_to_store_the_outcome_is_logged_with_the_jobs_ids(store, monkeypatch):
    def broken_finish(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(store, "end_attempt", broken_finish)

    async def scenario(h):
        job = h.submit("hello-world", {"iterations": 0})
        job = store.get(job.id)
        for _ in range(1500):
            if lines_about(logs, "could not store how the job ended"):
                return job
            await asyncio.sleep(0.01)
        raise AssertionError("the failure was not logged")

    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        job = run(store, scenario)
    [failed] = lines_about(logs, "could not store how the job ended")
    assert (failed["job_id"], failed["request_id"]) == (job.id, job.trace_id) and failed["exc_info"]
    assert store.get(job.id).state == "QUEUED"  # requeued at stop, to run again


def test_no_program_runs_in_the_service_process(store, bell):
    async def scenario(h):
        job = h.submit("sleepy", {"seconds": 60})
        pid = await h.pid_of(job.id)
        h.executor.cancel(job.id)
        return pid

    assert run(store, scenario) != os.getpid()


def test_the_servicer_answers_unavailable_before_start():
    from qruntime_jobs.servicer import JobsServicer

    with pytest.raises(Unavailable):
        JobsServicer().deps  # noqa: B018
