"""Per-backend execution queues: at most `adapter.concurrency` runs at once, the rest wait their turn.

Runs execute in worker threads so the event loop keeps serving calls while a simulation takes
seconds. A run that was started keeps its slot until its thread finishes, even when the caller
gives up (a cancelled job, a deadline): the machine is busy until then, and pending counts say so.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from qiskit import QuantumCircuit
from qruntime.devices.v1 import backend_pb2

from qruntime_kit.errors import NotFound, Unavailable
from qruntime_kit.logging import get_logger

from .adapters import BackendAdapter

log = get_logger("devices")


@dataclasses.dataclass
class _Queue:
    adapter: BackendAdapter
    slots: asyncio.Semaphore
    waiting: int = 0
    running: int = 0
    operational: bool = True
    status_message: str = "active"


class ExecutionQueues:
    """One queue per backend, sharing a thread pool just big enough for every backend's slots."""

    def __init__(self, adapters: Mapping[str, BackendAdapter]) -> None:
        self._queues = {
            name: _Queue(adapter, asyncio.Semaphore(adapter.concurrency))
            for name, adapter in adapters.items()
        }
        workers = sum(adapter.concurrency for adapter in adapters.values()) or 1
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backend-run")

    def pending(self, name: str) -> int:
        """Runs waiting for or in execution on the backend."""
        queue = self._queue(name)
        return queue.waiting + queue.running

    def running(self, name: str) -> int:
        """Runs in execution on the backend now."""
        return self._queue(name).running

    def set_operational(self, name: str, operational: bool, status_message: str = "") -> None:
        """Take a backend out of service (new runs are refused) or put it back."""
        queue = self._queue(name)
        queue.operational = operational
        queue.status_message = status_message or ("active" if operational else "maintenance")
        log.info("backend status", backend=name, operational=operational, status=queue.status_message)

    def status(self, name: str) -> backend_pb2.BackendStatus:
        queue = self._queue(name)
        return backend_pb2.BackendStatus(
            operational=queue.operational,
            pending_jobs=queue.waiting + queue.running,
            status_message=queue.status_message,
        )

    async def run(
        self,
        name: str,
        circuits: list[QuantumCircuit],
        shots: int,
        seed: int | None = None,
        memory: bool = False,
    ) -> list[backend_pb2.CircuitResult]:
        """Check the circuits (adapter.validate), wait for a free slot on the backend, and run them
        (adapter.execute) in a worker thread."""
        queue = self._queue(name)
        if not queue.operational:
            raise Unavailable(
                f"backend {name} is not taking work now ({queue.status_message})",
                reason="BACKEND_NOT_OPERATIONAL",
                metadata={"backend": name, "status": queue.status_message},
            )
        # Bad input fails now, not after waiting behind other jobs; in a thread, as checking hundreds
        # of large circuits takes long enough to hold up every other call.
        await asyncio.to_thread(queue.adapter.validate, circuits, shots)
        queue.waiting += 1
        queued = time.perf_counter()
        try:
            await queue.slots.acquire()
        finally:
            queue.waiting -= 1
        queue.running += 1

        def release(_future: object) -> None:
            queue.running -= 1
            queue.slots.release()

        log.info("run started", backend=name, circuits=len(circuits), shots=shots,
                 waited_ms=round((time.perf_counter() - queued) * 1000, 1))
        started = time.perf_counter()
        call = functools.partial(queue.adapter.execute, circuits, shots, seed, memory)  # checked above
        # Copy the context so log lines from the worker thread carry the caller's job_id.
        context = contextvars.copy_context()
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, context.run, call)
        except RuntimeError:  # closed: shutting down
            release(None)
            raise Unavailable(
                "the devices service is shutting down", reason="SHUTTING_DOWN", metadata={"backend": name}
            ) from None
        future.add_done_callback(release)  # added first: the slot is free before the caller resumes
        results = await asyncio.shield(future)
        log.info("run finished", backend=name, ms=round((time.perf_counter() - started) * 1000, 1))
        return results

    def warm_up(self) -> None:
        """Warm every backend up (blocking); meant for a thread at start-up."""
        for name, queue in self._queues.items():
            started = time.perf_counter()
            try:
                queue.adapter.warm_up()
            except Exception:  # the backend's first run builds what it needs, or fails with a typed error
                log.exception("backend warm-up failed", backend=name)
                continue
            log.debug("backend warmed up", backend=name, ms=round((time.perf_counter() - started) * 1000, 1))

    def close(self) -> None:
        """Stop taking runs; runs in progress finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise NotFound(
                f"no backend is named {name!r}", reason="BACKEND_NOT_FOUND", metadata={"backend": name}
            ) from None
