"""CreateJob's lookup of a named backend: the devices service's answer for a plan is kept for
KEEP_SECONDS; another plan, a refusal, or an answer past that asks the devices service again."""

from __future__ import annotations

import asyncio

import pytest
from qruntime.devices.v1 import backend_pb2, devices_service_pb2

from qruntime_jobs.backend_lookup import KEEP_SECONDS, BackendLookup
from qruntime_kit.errors import NotFound, PermissionDenied

LITE = (("authorization", "Bearer lite-user"),)
STANDARD = (("authorization", "Bearer standard-user"),)


class Devices:
    """The devices service's GetBackend as the lookup sees it: one simulator, which the Standard plan
    does not include; counts the calls, and each answer's pending_jobs is the call's number."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple]] = []

    async def GetBackend(self, request, *, metadata, timeout):  # noqa: N802 - the gRPC method's name
        self.asked.append((request.name, metadata))
        if request.name != "simulator":
            raise NotFound(f"no backend is named {request.name!r}", reason="BACKEND_NOT_FOUND")
        if metadata == STANDARD:
            raise PermissionDenied("not in your plan", reason="BACKEND_NOT_IN_PLAN")
        status = backend_pb2.BackendStatus(pending_jobs=len(self.asked))
        return devices_service_pb2.GetBackendResponse(backend=backend_pb2.Backend(name=request.name, status=status))


def test_an_answer_is_kept_for_its_plan_then_asked_for_again():
    now = [0.0]
    devices, lookup = Devices(), BackendLookup(clock=lambda: now[0])

    async def scenario():
        first = await lookup.backend(devices, "simulator", "lite", LITE)
        again = await lookup.backend(devices, "simulator", "lite", (("authorization", "Bearer other"),))
        now[0] = KEEP_SECONDS + 0.1
        later = await lookup.backend(devices, "simulator", "lite", LITE)
        return first, again, later

    first, again, later = asyncio.run(scenario())
    assert again is first and first.status.pending_jobs == 1
    assert later.status.pending_jobs == 2
    assert len(devices.asked) == 2


def test_another_plan_and_refusals_are_asked_every_time():
    devices, lookup = Devices(), BackendLookup()

    async def scenario():
        await lookup.backend(devices, "simulator", "lite", LITE)
        for _ in range(2):  # a Lite caller's kept answer is not a Standard caller's
            with pytest.raises(PermissionDenied):
                await lookup.backend(devices, "simulator", "standard", STANDARD)
        for _ in range(2):
            with pytest.raises(NotFound):
                await lookup.backend(devices, "no-such-backend", "lite", LITE)

    asyncio.run(scenario())
    assert devices.asked == [("simulator", LITE), *[("simulator", STANDARD)] * 2, *[("no-such-backend", LITE)] * 2]
