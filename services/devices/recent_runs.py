"""Idempotent runs: a RunCircuits retried under the same idempotency key never runs twice.

The jobs service retries a RunCircuits whose answer it did not get (UNAVAILABLE on the way, say)
while the first run may have gone through, or may still be going. Each keyed run is one task here:
a repeat of its key awaits that same task, so it gets the first run's result (at once if it ended,
when it ends if not). A successful result is kept KEEP_SECONDS, at most KEPT runs (the oldest go
first); a run that failed or was cancelled is forgotten at once, so its retry runs afresh. The run
goes on while any caller awaits it, and is cancelled (its worker killed) when the last one gives up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from qruntime.devices.v1 import devices_service_pb2 as pb

from qruntime_kit.errors import InvalidArgument
from qruntime_kit.logging import get_logger

log = get_logger("devices")

KEEP_SECONDS = 600.0
KEPT = 256  # results are at most 64 MiB each, and usually kilobytes


@dataclasses.dataclass(eq=False)
class _Run:
    fingerprint: bytes
    task: asyncio.Task
    callers: int = 0
    ended: float | None = None  # monotonic time the run succeeded


def fingerprint(request: pb.RunCircuitsRequest) -> bytes:
    """What a repeat must match: everything that decides the outcome (not the job id, nor the key)."""
    same = pb.RunCircuitsRequest(
        backend=request.backend, circuits_qpy=request.circuits_qpy, shots=request.shots, memory=request.memory,
    )
    if request.HasField("seed"):
        same.seed = request.seed
    if request.HasField("primitive"):
        same.primitive.CopyFrom(request.primitive)
    return hashlib.sha256(same.SerializeToString(deterministic=True)).digest()


class RecentRuns:
    """The keyed runs of the last KEEP_SECONDS, by idempotency key."""

    def __init__(self, *, keep_seconds: float = KEEP_SECONDS, kept: int = KEPT) -> None:
        self._keep_seconds = keep_seconds
        self._kept = kept
        self._runs: OrderedDict[str, _Run] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    async def run(
        self, request: pb.RunCircuitsRequest, execute: Callable[[], Awaitable[pb.RunCircuitsResponse]]
    ) -> pb.RunCircuitsResponse:
        """execute()'s result, or the result of the run that had request's key first."""
        key = request.idempotency_key
        if not key:
            return await execute()
        self._forget_old(room_for_one=key not in self._runs)
        found = fingerprint(request)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run(found, asyncio.ensure_future(execute()))
            run.task.add_done_callback(lambda task: self._ended(key, run, task))
        elif run.fingerprint != found:
            raise InvalidArgument(
                f"idempotency key {key!r} was used for a different run (other circuits, backend, shots, seed or "
                "memory); use a new key for a new run",
                reason="IDEMPOTENCY_KEY_REUSED",
                metadata={"idempotency_key": key},
                field_violations=[("idempotency_key", "must be new for a different run")],
            )
        else:
            log.info("repeated run: answered with the first run's result", idempotency_key=key,
                     first_run="ended" if run.task.done() else "running")
        run.callers += 1
        try:
            return await asyncio.shield(run.task)
        except asyncio.CancelledError:
            if run.callers == 1 and not run.task.done():  # the last caller gave up: stop the run
                run.task.cancel()
            raise
        finally:
            run.callers -= 1

    def _ended(self, key: str, run: _Run, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            if self._runs.get(key) is run:
                del self._runs[key]
            return
        run.ended = time.monotonic()

    def _forget_old(self, *, room_for_one: bool) -> None:
        """Forget, oldest first, the ended runs past KEEP_SECONDS and, to make room for a new run, the
        oldest ended ones while KEPT are kept (a repeat's own run is never forgotten to make room). It
        usually reads one entry: the dict is not copied (copying it was 2.8% of a busy suite's time)."""
        now, forgotten = time.monotonic(), []
        for key, run in self._runs.items():
            full = room_for_one and len(self._runs) - len(forgotten) >= self._kept
            if run.ended is not None and (full or now - run.ended > self._keep_seconds):
                forgotten.append(key)
            elif not full:
                break
        for key in forgotten:
            del self._runs[key]
