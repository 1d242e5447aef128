"""RemoteBackend and its bridge to the event loop, against a scripted DevicesService stub."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from qruntime.devices.v1 import backend_pb2
from qruntime.devices.v1 import devices_service_pb2 as pb
from qruntime.encoding import load_circuits_qpy

from qruntime_jobs import backend as backend_module
from qruntime_jobs.backend import BackendError, DevicesBridge, RemoteBackend, SuiteError
from qruntime_jobs.control import JobCancelled, JobControl
from qruntime_kit.errors import InvalidArgument, Unavailable
from qruntime_kit.interceptors import current_request_id


class ScriptedDevices:
    """Answers RunCircuits and GetBackend like the devices service, raising the scripted errors first."""

    def __init__(self, *errors: Exception, delay: float = 0.0) -> None:
        self.errors = list(errors)
        self.delay = delay
        self.calls: list[tuple[object, dict[str, str], float]] = []
        self.cancelled = threading.Event()

    async def _answer(self, request, metadata, timeout, response):
        self.calls.append((request, dict(metadata), timeout))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if self.errors:
            raise self.errors.pop(0)
        return response

    async def RunCircuits(self, request, metadata=(), timeout=None):
        result = backend_pb2.CircuitResult(counts={"00": 3, "11": 1}, register_names=["c"])
        return await self._answer(request, metadata, timeout, pb.RunCircuitsResponse(results=[result]))

    async def GetBackend(self, request, metadata=(), timeout=None):
        backend = backend_pb2.Backend(name=request.name, configuration=backend_pb2.BackendConfiguration(
            num_qubits=7, max_shots=1000))
        return await self._answer(request, metadata, timeout, pb.GetBackendResponse(backend=backend))


class ServiceCredentials:
    """Like the kit's Credentials with a fixed service token: the request id is the one bound in the logging context."""

    async def metadata(self, on_behalf_of=None):
        assert on_behalf_of is None  # device calls during execution use the service's own token
        return (("authorization", "Bearer service-token"), ("x-request-id", current_request_id()))


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def remote(loop, devices, control=None) -> tuple[RemoteBackend, JobControl]:
    if control is None:
        control = asyncio.run_coroutine_threadsafe(_control(), loop).result()
    bridge = DevicesBridge(devices, ServiceCredentials(), loop)
    return RemoteBackend("sim", bridge, control, job_id="job-1", request_id="trace-1", timeout=99), control


async def _control() -> JobControl:
    return JobControl()


def test_run_sends_qpy_with_the_service_token_and_the_jobs_trace_id(loop, bell):
    devices = ScriptedDevices()
    backend, _ = remote(loop, devices)
    assert backend.run([bell, bell], shots=4, seed=5, memory=True) == [
        {"counts": {"00": 3, "11": 1}, "memory": [], "register_names": ["c"]}
    ]
    request, metadata, timeout = devices.calls[0]
    sent = (request.backend, request.shots, request.seed, request.memory, request.job_id)
    assert sent == ("sim", 4, 5, True, "job-1")
    assert [c.name for c in load_circuits_qpy(request.circuits_qpy)] == ["bell", "bell"]
    assert metadata == {"authorization": "Bearer service-token", "x-request-id": "trace-1"} and timeout == 99
    backend.run(bell)
    assert not devices.calls[1][0].HasField("seed")


def test_num_qubits_asks_the_devices_service_once(loop):
    devices = ScriptedDevices()
    backend, _ = remote(loop, devices)
    assert (backend.name, backend.num_qubits, backend.max_shots) == ("sim", 7, 1000)
    assert len(devices.calls) == 1


def test_a_refusal_is_a_backend_error_with_the_devices_reason(loop, bell):
    backend, _ = remote(loop, ScriptedDevices(InvalidArgument("shots must be 1..1000", reason="INVALID_SHOTS")))
    with pytest.raises(BackendError) as caught:
        backend.run(bell, shots=5000)
    assert caught.value.reason == "INVALID_SHOTS" and "1..1000" in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [({"shots": 2**31}, "INVALID_SHOTS"), ({"seed": 2**63}, "INVALID_SEED"), ({"seed": -(2**63) - 1}, "INVALID_SEED")],
)
def test_values_the_request_cannot_carry_are_refused_like_the_backend_refuses(loop, bell, arguments, reason):
    devices = ScriptedDevices()
    backend, _ = remote(loop, devices)
    with pytest.raises(BackendError) as caught:
        backend.run(bell, **arguments)
    assert caught.value.reason == reason and str(next(iter(arguments.values()))) in str(caught.value)
    assert devices.calls == []


def test_unavailable_is_retried_then_a_suite_error(loop, bell, monkeypatch):
    monkeypatch.setattr(backend_module, "_RETRY_SECONDS", 0.01)
    down = Unavailable("connection refused", reason="UPSTREAM_UNAVAILABLE")
    devices = ScriptedDevices(down, down)
    backend, _ = remote(loop, devices)
    assert backend.run(bell)[0]["counts"] == {"00": 3, "11": 1}  # the third attempt answers
    backend, _ = remote(loop, ScriptedDevices(down, down, down))
    with pytest.raises(SuiteError):
        backend.run(bell)
    not_operational = Unavailable("maintenance", reason="BACKEND_NOT_OPERATIONAL")
    backend, _ = remote(loop, ScriptedDevices(not_operational, not_operational, not_operational))
    with pytest.raises(BackendError) as caught:
        backend.run(bell)
    assert caught.value.reason == "BACKEND_NOT_OPERATIONAL"


def test_cancelling_stops_waiting_and_cancels_the_call(loop, bell):
    devices = ScriptedDevices(delay=30)
    backend, control = remote(loop, devices)
    loop.call_later(0.2, control.cancel)
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        backend.run(bell)
    assert time.monotonic() - started < 5
    assert devices.cancelled.wait(5)
    with pytest.raises(JobCancelled):  # once cancelled, no further device call is made
        backend.run(bell)
    assert len(devices.calls) == 1
