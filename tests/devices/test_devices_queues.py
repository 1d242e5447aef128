"""Per-backend execution queues over real worker processes: concurrency limits, pending counts,
cancellation, the operational flag, memory shares and warm-up.

The tests of this module share one pool (its workers take seconds to start) on one event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from pathlib import Path

import pytest
import structlog
from plugged import BrokenWarmUpAdapter, GatedAdapter, PluggedAdapter
from process_support import alive
from qiskit_ibm_runtime.fake_provider import FakeLimaV2
from qruntime.devices.v1 import backend_pb2
from qruntime.devices.v1 import devices_service_pb2 as pb
from qruntime.encoding import dump_circuits_qpy
from systems import isa

from qruntime_devices.adapters import AerSimulatorAdapter
from qruntime_devices.emulated import EmulatedSystemAdapter
from qruntime_devices.pool import WorkerPool
from qruntime_devices.queues import PREADMITTED_BYTES, ExecutionQueues, MemoryShares
from qruntime_devices.recent_runs import RecentRuns
from qruntime_kit.errors import InvalidArgument, NotFound, Unavailable

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


GiB, MiB = 1 << 30, 1 << 20
_seeds = itertools.count(1)


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="queues-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def gates(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def queues(loop, gates):
    adapters = {
        "gated-physical": GatedAdapter("gated-physical", "physical", gates),
        "gated-simulator": GatedAdapter("gated-simulator", "simulator", gates),
        "ibmq_qasm_simulator": AerSimulatorAdapter("ibmq_qasm_simulator"),
        "ibm_lima": EmulatedSystemAdapter(FakeLimaV2(), name="ibm_lima"),
    }
    for adapter in adapters.values():
        adapter.limit_memory(GiB)
    pool = WorkerPool(adapters, size=2, simulation_memory=GiB, check_seconds=20, warm=False)
    yield ExecutionQueues(adapters, pool, GiB)
    asyncio.run_coroutine_threadsafe(pool.close(), loop).result(timeout=30)


@pytest.fixture
def call(loop):
    """call(coroutine) runs it on the module's loop and returns a concurrent future."""
    return lambda coroutine: asyncio.run_coroutine_threadsafe(coroutine, loop)


@pytest.fixture(scope="module")
def bell_qpy(bell_module) -> bytes:
    return dump_circuits_qpy(bell_module)


@pytest.fixture(scope="module")
def bell_module():
    from qruntime import ReferenceCircuits

    return ReferenceCircuits.bell()


def request(bell_qpy: bytes, backend: str, seed: int, shots: int = 10) -> pb.RunCircuitsRequest:
    return pb.RunCircuitsRequest(backend=backend, circuits_qpy=bell_qpy, shots=shots, seed=seed)


def until(condition, timeout: float = 30.0, unfinished=()) -> None:
    """Wait for condition; the futures in unfinished must not end meanwhile (their error says why)."""
    deadline = time.monotonic() + timeout
    while not condition():
        for future in unfinished:
            if future.done():
                future.result()
                raise AssertionError("a run ended early")
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def running(gates: Path, seeds) -> list[int]:
    return [seed for seed in seeds if (gates / f"{seed}.running").exists()]


@pytest.mark.parametrize(("kind", "slots"), [("physical", 1), ("simulator", 2)])
def test_at_most_concurrency_runs_at_once_and_pending_counts_the_rest(queues, call, gates, bell_qpy, kind, slots):
    name = f"gated-{kind}"
    seeds = [next(_seeds) for _ in range(4)]
    runs = [call(queues.run(request(bell_qpy, name, seed))) for seed in seeds]
    until(lambda: len(running(gates, seeds)) == slots, unfinished=runs)
    time.sleep(0.2)  # nobody else sneaks in
    assert len(running(gates, seeds)) == slots
    assert queues.pending(name) == 4 and queues.running(name) == slots
    assert queues.status(name).pending_jobs == 4
    for opened, seed in enumerate(seeds):  # one at a time: never more than `slots` at once
        left = min(slots, 4 - opened)
        until(lambda left=left: len(running(gates, seeds)) == left)
        (gates / f"{seed}.open").touch()
    results = [run.result(timeout=30) for run in runs]
    assert [dict(r.results[0].counts) for r in results] == [{"0": 10}] * 4
    assert queues.pending(name) == 0


def test_a_cancelled_waiter_leaves_the_queue_and_a_cancelled_run_frees_its_slot_at_once(
    queues, call, gates, bell_qpy
):
    seeds = [next(_seeds), next(_seeds)]
    runs = {seed: call(queues.run(request(bell_qpy, "gated-physical", seed))) for seed in seeds}
    until(lambda: queues.pending("gated-physical") == 2 and running(gates, seeds), unfinished=runs.values())
    [first] = running(gates, seeds)  # whichever passed its check first holds the one slot
    [second] = set(seeds) - {first}
    runs[second].cancel()
    until(lambda: queues.pending("gated-physical") == 1)
    pid = int((gates / f"{first}.running").read_text())
    assert alive(pid)
    runs[first].cancel()
    cancelled = time.monotonic()
    until(lambda: not alive(pid), timeout=1.0)  # its worker is killed: the machine is free again
    until(lambda: queues.pending("gated-physical") == 0, timeout=1.0)
    assert time.monotonic() - cancelled < 1.0
    third = next(_seeds)
    (gates / f"{third}.open").touch()
    assert call(queues.run(request(bell_qpy, "gated-physical", third, shots=5))).result(30).results[0].counts["0"] == 5


def test_a_jobs_runs_go_back_to_the_worker_that_ran_its_last_one(queues, call, gates, bell_qpy):
    def ran_on(job: str, seed: int, *, then_open: bool = True):
        run = call(queues.run(pb.RunCircuitsRequest(backend="gated-simulator", circuits_qpy=bell_qpy, shots=3,
                                                    seed=seed, job_id=job)))
        until(lambda: running(gates, [seed]), unfinished=[run])
        pid = int((gates / f"{seed}.running").read_text())
        if then_open:
            (gates / f"{seed}.open").touch()
            run.result(timeout=30)
        return pid, run

    # Two jobs at once take two workers; then each job's next runs, one after the other with both
    # workers idle, go to its own (where its circuits are decoded already), not to the same first one.
    a_seed, b_seed = next(_seeds), next(_seeds)
    a_pid, a_run = ran_on("job-a", a_seed, then_open=False)
    b_pid, b_run = ran_on("job-b", b_seed, then_open=False)
    assert a_pid != b_pid
    for seed, run in ((a_seed, a_run), (b_seed, b_run)):
        (gates / f"{seed}.open").touch()
        run.result(timeout=30)
    for _ in range(2):
        assert ran_on("job-b", next(_seeds))[0] == b_pid
        assert ran_on("job-a", next(_seeds))[0] == a_pid


def test_a_run_waits_for_its_share_of_the_memory_when_less_is_free_than_it_would_hold_ahead(
    queues, loop, call, bell_qpy
):
    def memory(change) -> None:
        asyncio.run_coroutine_threadsafe(change(), loop).result(timeout=5)

    async def take(size):
        return queues.memory.take_now(size)

    async def give(size):
        queues.memory.give(size)

    total = queues.memory.total
    assert queues.memory.held == 0
    memory(lambda: take(total - MiB))  # less free than PREADMITTED_BYTES, more than a Bell circuit needs
    try:
        run = call(queues.run(request(bell_qpy, "ibmq_qasm_simulator", next(_seeds), shots=20)))
        assert sum(run.result(timeout=30).results[0].counts.values()) == 20  # its share, then GO
        assert queues.memory.held == total - MiB
        memory(lambda: take(MiB))  # nothing free: a run is checked, then waits for its share
        run = call(queues.run(request(bell_qpy, "ibmq_qasm_simulator", next(_seeds), shots=20)))
        time.sleep(0.5)
        assert not run.done()
        memory(lambda: give(MiB))
        assert sum(run.result(timeout=30).results[0].counts.values()) == 20
    finally:
        memory(lambda: give(total - MiB))
    until(lambda: queues.memory.held == 0)
    assert queues.memory.take_now(PREADMITTED_BYTES) == PREADMITTED_BYTES and queues.memory.take_now(total) == 0
    queues.memory.give(PREADMITTED_BYTES)


def test_bad_input_fails_at_once_without_queueing(queues, call, gates, bell_qpy):
    busy_seed = next(_seeds)
    busy = call(queues.run(request(bell_qpy, "gated-physical", busy_seed)))
    until(lambda: running(gates, [busy_seed]), unfinished=[busy])
    with pytest.raises(InvalidArgument) as caught:
        call(queues.run(request(bell_qpy, "gated-physical", next(_seeds), shots=5000))).result(timeout=30)
    assert caught.value.reason == "INVALID_SHOTS"
    assert queues.pending("gated-physical") == 1
    (gates / f"{busy_seed}.open").touch()
    busy.result(timeout=30)


def test_unknown_backend(queues, call, bell_qpy):
    with pytest.raises(NotFound) as caught:
        call(queues.run(request(bell_qpy, "nope", 1))).result(timeout=5)
    assert caught.value.reason == "BACKEND_NOT_FOUND"


def test_runs_for_a_backend_in_maintenance_wait_until_it_is_back(queues, loop, call, gates, bell_qpy):
    def set_operational(*args):
        loop.call_soon_threadsafe(queues.set_operational, "gated-simulator", *args)

    set_operational(False, "recalibrating")
    until(lambda: not queues.status("gated-simulator").operational)
    assert queues.status("gated-simulator") == backend_pb2.BackendStatus(
        operational=False, status_message="maintenance: recalibrating"
    )
    try:
        seed = next(_seeds)
        waiting = call(queues.run(request(bell_qpy, "gated-simulator", seed)))
        until(lambda: queues.pending("gated-simulator") == 1, unfinished=[waiting])
        with pytest.raises(InvalidArgument) as caught:  # bad input is still refused at once
            call(queues.run(request(bell_qpy, "gated-simulator", next(_seeds), shots=0))).result(timeout=30)
        assert caught.value.reason == "INVALID_SHOTS"
        time.sleep(0.3)
        assert not waiting.done() and not running(gates, [seed]) and queues.running("gated-simulator") == 0
    finally:
        set_operational(True)
    until(lambda: running(gates, [seed]), unfinished=[waiting])
    assert queues.status("gated-simulator").status_message == "active"
    (gates / f"{seed}.open").touch()
    assert waiting.result(timeout=30).results[0].counts["0"] == 10
    assert queues.pending("gated-simulator") == 0


def test_a_repeated_idempotency_key_gets_the_first_runs_result_and_never_runs_twice(
    queues, call, gates, bell_qpy
):
    recent = RecentRuns()
    seed = next(_seeds)
    keyed = request(bell_qpy, "gated-physical", seed)
    keyed.idempotency_key = f"job-1/1/{seed}"
    first = call(recent.run(keyed, lambda: queues.run(keyed)))
    until(lambda: running(gates, [seed]), unfinished=[first])
    repeat = call(recent.run(keyed, lambda: queues.run(keyed)))  # while the first still runs: it waits for it
    time.sleep(0.3)
    assert queues.pending("gated-physical") == 1 and not repeat.done()
    (gates / f"{seed}.open").touch()
    assert first.result(timeout=30) == repeat.result(timeout=30)
    ran = []  # after it ended: answered from memory, nothing runs

    async def must_not_run():
        ran.append(1)
        return pb.RunCircuitsResponse()

    assert call(recent.run(keyed, must_not_run)).result(timeout=5) == first.result()
    assert ran == []
    different = pb.RunCircuitsRequest()
    different.CopyFrom(keyed)
    different.shots = 11
    with pytest.raises(InvalidArgument) as caught:
        call(recent.run(different, must_not_run)).result(timeout=5)
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED" and ran == []


def test_a_failed_or_abandoned_keyed_run_is_forgotten_so_its_retry_runs(queues, call, gates, bell_qpy):
    recent = RecentRuns()
    bad = request(bell_qpy, "gated-physical", next(_seeds), shots=0)
    bad.idempotency_key = "job-2/1/1"
    with pytest.raises(InvalidArgument):
        call(recent.run(bad, lambda: queues.run(bad))).result(timeout=30)
    assert len(recent) == 0
    seed = next(_seeds)
    keyed = request(bell_qpy, "gated-physical", seed)
    keyed.idempotency_key = "job-2/1/2"
    abandoned = call(recent.run(keyed, lambda: queues.run(keyed)))
    until(lambda: running(gates, [seed]), unfinished=[abandoned])
    pid = int((gates / f"{seed}.running").read_text())
    abandoned.cancel()  # the only caller gave up: the run stops, its worker is killed
    until(lambda: not alive(pid) and len(recent) == 0 and queues.pending("gated-physical") == 0, timeout=5)
    (gates / f"{seed}.open").touch()
    assert call(recent.run(keyed, lambda: queues.run(keyed))).result(timeout=30).results[0].counts["0"] == 10


def test_real_simulators_run_through_their_queues(queues, call, bell_qpy, bell_module):
    names = ["ibmq_qasm_simulator", "ibm_lima"] * 3
    qpy = {"ibmq_qasm_simulator": bell_qpy, "ibm_lima": dump_circuits_qpy(isa(bell_module, "ibm_lima"))}
    runs = [call(queues.run(request(qpy[name], name, 1, shots=256))) for name in names]
    for run in runs:
        (result,) = run.result(timeout=60).results
        assert sum(result.counts.values()) == 256
    assert all(queues.pending(name) == 0 for name in set(names))


def test_runs_share_the_simulation_memory_by_their_estimates():
    async def scenario():
        shares = MemoryShares(1000)
        assert await shares.take(600) == 600
        second = asyncio.create_task(shares.take(600))
        await asyncio.sleep(0.05)
        assert not second.done()  # waits for its share
        shares.give(600)
        assert await asyncio.wait_for(second, 1) == 600
        shares.give(600)
        assert await asyncio.wait_for(shares.take(5000), 1) == 1000  # one run may hold it all
        shares.give(1000)
        assert shares.held == 0

    asyncio.run(scenario())


def test_a_closed_pool_refuses_runs_and_holds_no_slot(bell_qpy):
    async def scenario():
        adapters = {"plugged": PluggedAdapter("plugged")}
        pool = WorkerPool(adapters, size=1, simulation_memory=GiB, check_seconds=20, warm=False)
        queues = ExecutionQueues(adapters, pool, GiB)
        await pool.close()
        with pytest.raises(Unavailable) as caught:
            await queues.run(request(bell_qpy, "plugged", 1))
        assert caught.value.reason == "SHUTTING_DOWN"
        assert queues.pending("plugged") == 0

    asyncio.run(scenario())


def test_a_warm_pool_loads_every_backend_and_logs_a_failed_warm_up(bell_qpy):
    async def scenario():
        adapters = {"a-broken": BrokenWarmUpAdapter("a-broken"), "b-fine": PluggedAdapter("b-fine")}
        pool = WorkerPool(adapters, size=1, simulation_memory=GiB, check_seconds=20, warm=True)
        with structlog.testing.capture_logs() as logs:
            await pool.start()
            for _ in range(3000):
                if any(line["event"] == "backend warm-up failed" for line in logs) and pool.pids(busy=False):
                    break
                await asyncio.sleep(0.01)
        [failed] = [line for line in logs if line["event"] == "backend warm-up failed"]
        assert failed["backend"] == "a-broken" and "no calibration data" in failed["error"]
        [pid] = pool.pids()
        # The worker survived the failed warm-up and runs both backends.
        for name in adapters:
            response = await pool.run(request(bell_qpy, name, 1))
            assert response.results[0].counts["0"] == 10
        assert pool.pids() == [pid] and os.path.exists(f"/proc/{pid}")
        await pool.close()

    asyncio.run(scenario())


def test_an_adapter_the_workers_cannot_get_stops_the_service_at_start():
    class Local(PluggedAdapter):  # defined in a function: pickle cannot name its class
        pass

    with pytest.raises(ValueError, match="backend local cannot be sent to the simulation workers"):
        WorkerPool({"local": Local("local")}, size=1, simulation_memory=GiB, check_seconds=20, warm=False)


def test_kept_runs_are_forgotten_oldest_ended_first_when_too_many_or_too_old():
    async def scenario():
        recent = RecentRuns(keep_seconds=0.5, kept=3)
        release = asyncio.Event()
        calls: list[str] = []

        def keyed(key: str) -> pb.RunCircuitsRequest:
            return pb.RunCircuitsRequest(backend="b", shots=1, idempotency_key=key)

        async def run(key: str, wait: bool = False) -> pb.RunCircuitsResponse:
            async def execute():
                calls.append(key)
                if wait:
                    await release.wait()
                return pb.RunCircuitsResponse()
            return await recent.run(keyed(key), execute)

        running = asyncio.ensure_future(run("a", wait=True))  # the oldest, still running: never forgotten
        await asyncio.sleep(0)
        for key in "bcd":  # three ended after it: d makes four, so b (the oldest ended) goes
            await run(key)
        await run("e")  # c goes
        for key in "de":  # kept: answered without running again, and nothing forgotten for them
            await run(key)
        assert calls == ["a", "b", "c", "d", "e"]
        await run("b")  # forgotten: runs again (and d, the oldest ended left, goes)
        assert calls[-1] == "b" and len(recent) == 3
        release.set()
        await running
        await asyncio.sleep(0.6)  # past keep_seconds: every ended run is forgotten on the next call
        await run("f")
        assert len(recent) == 1 and calls[-1] == "f"

    asyncio.run(scenario())
