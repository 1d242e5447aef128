"""Per-backend execution queues: concurrency limits, pending counts, cancellation, operational flag."""

from __future__ import annotations

import asyncio
import threading

import pytest
import structlog
from qruntime.devices.v1 import backend_pb2

from qruntime_devices.adapters import BackendAdapter
from qruntime_devices.queues import ExecutionQueues
from qruntime_kit.errors import InvalidArgument, NotFound, Unavailable


class GatedAdapter(BackendAdapter):
    """A backend plugged in as hardware would be, whose runs block until the test opens the gate."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.gate = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def configuration(self):
        return backend_pb2.BackendConfiguration(num_qubits=5, max_shots=1000, max_experiments=10)

    def properties(self):
        return backend_pb2.BackendProperties()

    def execute(self, circuits, shots, seed, memory):
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert self.gate.wait(10)
            return [backend_pb2.CircuitResult(counts={"0": shots}) for _ in circuits]
        finally:
            with self._lock:
                self.running -= 1


async def _until(condition, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize(("kind", "slots"), [("physical", 1), ("simulator", 2)])
def test_at_most_concurrency_runs_at_once_and_pending_counts_the_rest(bell, kind, slots):
    async def scenario():
        adapter = GatedAdapter("gated", kind)
        queues = ExecutionQueues({"gated": adapter})
        runs = [asyncio.create_task(queues.run("gated", [bell], 10)) for _ in range(4)]
        await _until(lambda: adapter.running == slots)
        await asyncio.sleep(0.05)  # nobody else sneaks in
        assert adapter.running == slots
        assert queues.pending("gated") == 4
        assert queues.running("gated") == slots
        assert queues.status("gated").pending_jobs == 4
        adapter.gate.set()
        results = await asyncio.gather(*runs)
        assert [dict(r[0].counts) for r in results] == [{"0": 10}] * 4
        assert adapter.most_at_once == slots
        assert queues.pending("gated") == 0
        queues.close()

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_a_cancelled_run_keeps_its_slot(bell):
    async def scenario():
        adapter = GatedAdapter("gated", "physical")
        queues = ExecutionQueues({"gated": adapter})
        running = asyncio.create_task(queues.run("gated", [bell], 10))
        waiting = asyncio.create_task(queues.run("gated", [bell], 10))
        await _until(lambda: queues.pending("gated") == 2 and adapter.running == 1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert queues.pending("gated") == 1
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        assert queues.pending("gated") == 1  # the thread still runs: the backend is busy
        adapter.gate.set()
        await _until(lambda: queues.pending("gated") == 0)
        assert (await queues.run("gated", [bell], 5))[0].counts["0"] == 5
        queues.close()

    asyncio.run(scenario())


def test_bad_input_fails_at_once_without_queueing(bell):
    async def scenario():
        adapter = GatedAdapter("gated", "physical")
        queues = ExecutionQueues({"gated": adapter})
        busy = asyncio.create_task(queues.run("gated", [bell], 10))
        await _until(lambda: adapter.running == 1)
        with pytest.raises(InvalidArgument):
            await asyncio.wait_for(queues.run("gated", [bell], 5000), 1)
        assert queues.pending("gated") == 1
        adapter.gate.set()
        await busy
        queues.close()

    asyncio.run(scenario())


def test_unknown_and_out_of_service_backends(bell):
    async def scenario():
        queues = ExecutionQueues({"gated": GatedAdapter("gated", "simulator")})
        with pytest.raises(NotFound) as caught:
            await queues.run("nope", [bell], 10)
        assert caught.value.reason == "BACKEND_NOT_FOUND"
        queues.set_operational("gated", False)
        expected = backend_pb2.BackendStatus(operational=False, status_message="maintenance")
        assert queues.status("gated") == expected
        with pytest.raises(Unavailable) as caught:
            await queues.run("gated", [bell], 10)
        assert caught.value.reason == "BACKEND_NOT_OPERATIONAL"
        queues.set_operational("gated", True)
        assert queues.status("gated").operational and queues.status("gated").status_message == "active"
        queues.close()

    asyncio.run(scenario())


def test_real_simulators_run_through_their_queues(backends, bell):
    async def scenario():
        queues = ExecutionQueues(backends)
        names = ["ibmq_qasm_simulator", "ibm_lima"] * 3
        results = await asyncio.gather(*(queues.run(name, [bell], 256, seed=1) for name in names))
        for (result,) in results:
            assert sum(result.counts.values()) == 256
        assert all(queues.pending(name) == 0 for name in backends)
        queues.close()

    asyncio.run(scenario())


def test_a_closed_queue_refuses_runs_and_frees_the_slot(bell):
    async def scenario():
        adapter = GatedAdapter("gated", "physical")
        queues = ExecutionQueues({"gated": adapter})
        queues.close()
        with pytest.raises(Unavailable) as caught:
            await queues.run("gated", [bell], 10)
        assert caught.value.reason == "SHUTTING_DOWN"
        assert queues.pending("gated") == 0

    asyncio.run(scenario())


class CountingAdapter(GatedAdapter):
    """Records the threads its checks run in; its warm-up fails when told to."""

    def __init__(self, name: str, failing_warm_up: bool = False) -> None:
        super().__init__(name, "simulator")
        self.gate.set()
        self.checked_in: list[threading.Thread] = []
        self.failing_warm_up = failing_warm_up
        self.warmed_up = False

    def validate(self, circuits, shots):
        self.checked_in.append(threading.current_thread())
        super().validate(circuits, shots)

    def warm_up(self):
        if self.failing_warm_up:
            raise RuntimeError("no calibration data")
        self.warmed_up = True


def test_circuits_are_checked_once_and_off_the_event_loop(bell):
    async def scenario():
        adapter = CountingAdapter("counting")
        queues = ExecutionQueues({"counting": adapter})
        assert (await queues.run("counting", [bell], 10))[0].counts["0"] == 10
        assert len(adapter.checked_in) == 1 and adapter.checked_in[0] is not threading.current_thread()
        queues.close()

    asyncio.run(scenario())


def test_a_failed_warm_up_is_logged_and_the_other_backends_still_warm_up():
    broken, fine = CountingAdapter("a-broken", failing_warm_up=True), CountingAdapter("b-fine")
    queues = ExecutionQueues({"a-broken": broken, "b-fine": fine})
    with structlog.testing.capture_logs() as logs:
        queues.warm_up()
    assert fine.warmed_up
    [failed] = [line for line in logs if line["event"] == "backend warm-up failed"]
    assert failed["backend"] == "a-broken" and failed["log_level"] == "error" and failed["exc_info"]
    queues.close()

