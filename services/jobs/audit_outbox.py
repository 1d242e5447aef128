"""The jobs store's audit outbox, forwarded to the auth service's trail.

CreateJob stores its success audit event in the transaction that stores the job (qruntime_kit.audit
pending_success): the job and the event of its creation are stored together or not at all, and the
call is answered without waiting for the auth service (over gRPC between processes, a call of about
1 ms here). This forwarder moves the outbox's events to the trail: GATHER_SECONDS after a commit woke
it, with whatever else was committed meanwhile (forwarded one by one, at once, the three store trips
and the auth write of each event made the next job wait: a sequential Bell job 3.9 -> 5.2 ms,
measured), and every SWEEP_SECONDS for events a replica left behind (it died between forwarding and
forgetting them, or could not reach auth). Events are claimed in the store for HOLD_SECONDS so that
replicas do not forward the same ones; one whose replica died after writing it to the trail but
before forgetting it is forwarded again by another: an event may reach the trail twice, never not at
all. While auth is unreachable the events wait in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from qruntime_kit.audit import AuditEvent, event_from_json
from qruntime_kit.logging import get_logger

from .store import JobStore

log = get_logger("jobs.audit_outbox")
SWEEP_SECONDS = 5.0
GATHER_SECONDS = 0.1
RETRY_SECONDS = 1.0
HOLD_SECONDS = 30.0
BATCH = 500


class AuditOutbox:
    def __init__(self, store: JobStore, write: Callable[[list[AuditEvent]], Awaitable[None]], runner: str) -> None:
        self._store = store
        self._write = write  # the audit sink's write_at_once: raises when the events were not written
        self._runner = runner
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake.set()  # what a previous life of this service left, at once
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """Events were committed to the outbox: forward them."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop, after forwarding what the outbox holds if auth takes it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # what is left waits for the next start, or another replica
            await self.forward()

    async def forward(self) -> int:
        """Forward one batch of unclaimed events; how many. Raises when auth did not take them (they
        are released for the next try)."""
        ids, events = await asyncio.to_thread(self._claim)
        if not ids:
            return 0
        try:
            await self._write(events)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.release_audit_events, ids, self._runner)
            raise
        await asyncio.to_thread(self._store.forget_audit_events, ids, self._runner)
        return len(ids)

    def _claim(self) -> tuple[list[int], list[AuditEvent]]:
        """A batch claimed, and its events parsed, in the store's thread (up to BATCH of JSON)."""
        claimed = self._store.claim_audit_events(self._runner, limit=BATCH, hold_seconds=HOLD_SECONDS)
        return [id_ for id_, _ in claimed], [event_from_json(text) for _, text in claimed]

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_SECONDS):
                    await self._wake.wait()
                await asyncio.sleep(GATHER_SECONDS)
            self._wake.clear()
            try:
                while await self.forward() == BATCH:
                    pass
            except Exception as err:  # noqa: BLE001 - auth unreachable, say: the events wait in the outbox
                log.warning("audit events wait in the outbox: auth did not take them", error=str(err))
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()
