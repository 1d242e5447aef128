"""Per-backend execution queues: at most `adapter.concurrency` runs at once, the rest wait their turn.

A backend an operator took out of service (maintenance) keeps its queue: runs sent to it wait there
until it is back, counted in its pending runs; those already executing finish.

A run that finds every slot of its backend taken is checked first, in a worker and not behind the
queue, so bad input fails at once rather than after the runs ahead of it. With a slot, its worker
decodes and checks the circuits (again), says how much memory their simulation needs, and waits
until the run may have that share of the simulation memory (all runs together hold at most
`simulation_memory_bytes`, by their estimates) before it simulates (pool.py); a run that finds
PREADMITTED_BYTES free holds them before its worker starts, and if it needs no more its worker
simulates without waiting for the service's word. A caller that gives
up frees its slot at once: waiting, it leaves the queue; running, its worker is killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping

from qruntime.devices.v1 import backend_pb2
from qruntime.devices.v1 import devices_service_pb2 as pb

from qruntime_kit.errors import NotFound
from qruntime_kit.interceptors import describe_call
from qruntime_kit.logging import get_logger

from . import protocol
from .adapters import BackendAdapter, not_quick
from .memory import describe_bytes
from .pool import WorkerPool

log = get_logger("devices")
PREADMITTED_BYTES = 64 << 20  # a state vector of 22 qubits, a density matrix of 11


@dataclasses.dataclass
class _Queue:
    adapter: BackendAdapter
    slots: asyncio.Semaphore
    waiting: int = 0
    running: int = 0
    others: int = 0  # runs waiting or running that were not asked only if quick
    operational: bool = True
    status_message: str = "active"
    in_service: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.in_service.set()


class MemoryShares:
    """The simulation memory the running simulations hold, by their estimates; a run waits until its
    share is free. One run may hold all of it (the memory guard refused anything larger)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> int:
        size = min(size, self.total)
        while self.held + size > self.total:
            freed = self._freed
            await freed.wait()
        self.held += size
        return size

    def take_now(self, size: int) -> int:
        """size if it is free now (then held), else 0."""
        if self.held + size > self.total:
            return 0
        self.held += size
        return size

    def give(self, size: int) -> None:
        self.held -= size
        self._freed.set()
        self._freed = asyncio.Event()


class ExecutionQueues:
    """One queue per backend; the runs execute in the pool's workers."""

    def __init__(self, adapters: Mapping[str, BackendAdapter], pool: WorkerPool, simulation_memory: int) -> None:
        self._queues = {
            name: _Queue(adapter, asyncio.Semaphore(adapter.concurrency)) for name, adapter in adapters.items()
        }
        self._pool = pool
        self.memory = MemoryShares(simulation_memory)

    def pending(self, name: str) -> int:
        """Runs waiting for or in execution on the backend."""
        queue = self._queue(name)
        return queue.waiting + queue.running

    def running(self, name: str) -> int:
        """Runs in execution on the backend now."""
        return self._queue(name).running

    def set_operational(self, name: str, operational: bool, reason: str = "") -> None:
        """Take a backend out of service (maintenance: new runs wait) or put it back."""
        queue = self._queue(name)
        queue.operational = operational
        if operational:
            queue.status_message = "active"
            queue.in_service.set()
        else:
            queue.status_message = f"maintenance: {reason}" if reason else "maintenance"
            queue.in_service.clear()
        log.info("backend status", backend=name, operational=operational, status=queue.status_message,
                 pending=self.pending(name))

    def status(self, name: str) -> backend_pb2.BackendStatus:
        queue = self._queue(name)
        return backend_pb2.BackendStatus(
            operational=queue.operational,
            pending_jobs=queue.waiting + queue.running,
            running_jobs=queue.running,
            status_message=queue.status_message,
        )

    async def check(self, request: pb.CheckCircuitsRequest) -> pb.CheckCircuitsResponse:
        """Decode and check circuits as a run would, in a worker, without queueing."""
        self._queue(request.backend)
        return await self._pool.check(request)

    async def run(self, request: pb.RunCircuitsRequest) -> pb.RunCircuitsResponse:
        """Check the circuits, wait for a slot on the backend and for the memory their simulation
        needs, and run them in a worker."""
        name = request.backend
        queue = self._queue(name)
        queued = time.perf_counter()
        # A quick run waits its turn behind quick runs only (milliseconds each), never behind another.
        if request.only_if_quick and (queue.others or not queue.operational):
            raise not_quick("the backend is busy with other runs")
        others = 0 if request.only_if_quick else 1
        queue.others += others
        try:
            return await self._queued(queue, request, queued)
        finally:
            queue.others -= others

    async def _queued(self, queue: _Queue, request: pb.RunCircuitsRequest, queued: float) -> pb.RunCircuitsResponse:
        name = request.backend
        queue.waiting += 1
        try:
            # A run that must wait is checked first (a quick one's wait is short: its worker checks it).
            if (queue.slots.locked() or not queue.operational) and not request.only_if_quick:
                check = pb.CheckCircuitsRequest(backend=name, circuits_qpy=request.circuits_qpy, shots=request.shots)
                if request.HasField("primitive"):
                    check.primitive.CopyFrom(request.primitive)
                await self._pool.check(check)
            while True:  # a slot, while the backend is in service
                if not queue.operational:
                    log.info("run waits for the backend's maintenance to end", status=queue.status_message)
                await queue.in_service.wait()
                await queue.slots.acquire()
                if queue.operational:
                    break
                queue.slots.release()
        finally:
            queue.waiting -= 1
        queue.running += 1
        # Held ahead while it is free: a run that needs no more (the common small one) then simulates
        # as soon as its worker has checked it, without a round trip to this process (protocol.py).
        budget = held = self.memory.take_now(PREADMITTED_BYTES)

        async def admit(checked: pb.CheckCircuitsResponse) -> None:
            nonlocal held, started, admitted
            needs = protocol.needs(checked)
            if needs <= budget:  # the worker is simulating already, within what is held
                self.memory.give(budget - needs)
                held = needs
            else:
                self.memory.give(budget)
                held = 0
                held = await self.memory.take(needs)
            started = time.perf_counter()
            admitted = {"circuits": len(checked.circuits), "shots": request.shots, "memory": describe_bytes(needs),
                        "waited_ms": round((started - queued) * 1000, 1)}
            if not request.only_if_quick:  # a quick run's one line says it all when it ends
                log.info("run started", **admitted)

        started, admitted = queued, {}
        try:
            response = await self._pool.run(request, admit, budget)
            ran_ms = round((time.perf_counter() - started) * 1000, 1)
            if request.only_if_quick:  # its call's rpc line says what ran (a line of its own: ~45 us more)
                describe_call(run_ms=ran_ms, **admitted)
            else:
                log.info("run finished", ms=ran_ms)
            return response
        finally:
            queue.running -= 1
            self.memory.give(held)
            queue.slots.release()

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise NotFound(
                f"no backend is named {name!r}", reason="BACKEND_NOT_FOUND", metadata={"backend": name}
            ) from None
