"""The backend a job names, as the devices service describes it to the job's owner; answers kept briefly.

CreateJob (and CreateSession) ask the devices service for a named backend on the user's behalf: it
must exist and the user's plan must include it, and it gives the backend's kind and system time
limit. Whether a plan includes a backend depends on the plan and the backend's kind alone
(devices.servicer.allows), so an answer is the same for every caller on that plan: kept for
KEEP_SECONDS by (plan, name), it saves a call for every job but the first of each period, which
between processes is a network round trip (about 1 ms here). Refusals are not kept: a caller is told
of a missing backend or a plan that excludes it by the devices service itself, every time (and so
what is kept is bounded by the deployment's plans times its backends).

What a kept answer may have stale is the backend's status (KEEP_SECONDS old at most), which a job
does not record: its run goes by the backend's status of the moment (the devices service's queue, or
RunCircuits refusing a quick run), and a removed backend fails the run as it would have failed
moments after an uncached answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qruntime.devices.v1 import backend_pb2, devices_service_pb2

from qruntime_kit.outbound import call

KEEP_SECONDS = 2.0


class BackendLookup:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._kept: dict[tuple[str, str], tuple[backend_pb2.Backend, float]] = {}

    async def backend(self, devices, name: str, plan: str, metadata) -> backend_pb2.Backend:
        """The named backend as a caller on this plan sees it, fetched with the caller's credentials
        (metadata) unless fetched for that plan in the last KEEP_SECONDS."""
        key, now = (plan, name), self._clock()
        kept = self._kept.get(key)
        if kept is not None and now < kept[1]:
            return kept[0]
        request = devices_service_pb2.GetBackendRequest(name=name)
        backend = (await call(devices.GetBackend, request, metadata=metadata)).backend
        self._kept[key] = (backend, now + KEEP_SECONDS)
        return backend
