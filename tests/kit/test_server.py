"""The kit's server over a real socket: health, reflection, request ids, error mapping."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_kit.errors import from_rpc_error
from qruntime_kit.server import start_server
from qruntime_kit.settings import ServerSettings
from qruntime_suite.embedded import SuiteSettings, build_components


def test_health_serves_each_service_and_the_whole(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "qruntime.auth.v1.AuthService"):
            status = stub.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_health_can_be_watched_without_a_token(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_reflection_lists_services_without_a_token(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"qruntime.auth.v1.AuthService", "grpc.health.v1.Health"} <= names


def test_request_id_is_echoed_or_made(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        _, call = stub.ListSigningKeys.with_call(auth_service_pb2.ListSigningKeysRequest(),
                                                 metadata=(("x-request-id", "req-123"),))
        assert dict(call.trailing_metadata())["x-request-id"] == "req-123"
        _, call = stub.ListSigningKeys.with_call(auth_service_pb2.ListSigningKeysRequest())
        assert len(dict(call.trailing_metadata())["x-request-id"]) == 32
        assert "x-request-id" not in dict(call.initial_metadata())  # sent apart, it would cost a write of its own


def test_errors_carry_reason_domain_and_field_violations(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        try:
            stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key="", instance="x"))
        except grpc.RpcError as err:
            error = from_rpc_error(err)
        else:
            raise AssertionError("an empty API key was accepted")
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "API_KEY_MISSING"
    assert error.domain == "auth.qruntime"
    assert error.field_violations == [("api_key", "give the API key you were issued")]


def test_health_is_not_serving_until_every_component_has_started(tmp_path):
    """A probe must not see SERVING while a component is still starting (it would get UNAVAILABLE)."""

    class SlowStart:
        name, service_names, public_methods = "slow", ("test.Slow",), frozenset()
        seen: list[int] = []

        def register(self, server) -> None: ...

        async def start(self, runtime) -> None:
            with grpc.insecure_channel(runtime.address) as channel:
                request = health_pb2.HealthCheckRequest(service="")
                call = health_pb2_grpc.HealthStub(channel).Check.future(request)
                while not call.done():
                    await asyncio.sleep(0.01)
                self.seen.append(call.result().status)

        async def stop(self) -> None: ...

    async def scenario():
        settings = SuiteSettings(port=0, data_dir=str(tmp_path), grace_seconds=0)
        slow = SlowStart()
        suite = await start_server([*build_components(settings, ("auth",)), slow], settings)
        await suite.stop(0)
        return slow.seen

    assert asyncio.run(scenario()) == [health_pb2.HealthCheckResponse.NOT_SERVING]


class Recording:
    """A component that notes its start and stop in a shared list, and can fail either."""

    public_methods: frozenset[str] = frozenset()

    def __init__(self, name: str, events: list[str], fail_start: bool = False, fail_stop: bool = False) -> None:
        self.name, self.service_names = name, (f"test.{name}",)
        self._events, self._fail_start, self._fail_stop = events, fail_start, fail_stop

    def register(self, server) -> None: ...

    async def start(self, runtime) -> None:
        self._events.append(f"start {self.name}")
        if self._fail_start:
            raise RuntimeError(f"{self.name} cannot start")

    async def stop(self) -> None:
        self._events.append(f"stop {self.name}")
        if self._fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


def test_a_component_that_fails_to_start_stops_the_server_and_those_started(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events: list[str] = []
    components = [Recording("a", events), Recording("b", events, fail_start=True), Recording("c", events)]
    settings = ServerSettings(port=port, data_dir=str(tmp_path), grace_seconds=0)
    with pytest.raises(RuntimeError, match="b cannot start"):
        asyncio.run(start_server(components, settings))
    assert events == ["start a", "start b", "stop b", "stop a"]  # c never started
    with socket.socket() as again:  # the port was given back
        again.bind(("127.0.0.1", port))


def test_stopping_goes_on_past_a_component_that_fails_to_stop(tmp_path):
    async def scenario(events):
        components = [Recording("a", events), Recording("b", events, fail_stop=True)]
        suite = await start_server(components, ServerSettings(port=0, data_dir=str(tmp_path), grace_seconds=0))
        await suite.stop(0)

    events: list[str] = []
    asyncio.run(scenario(events))
    assert events == ["start a", "start b", "stop b", "stop a"]


class SlowPrograms(programs_service_pb2_grpc.ProgramsServiceServicer):
    """GetProgram answers only once released, so that a call can be in flight during a stop."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def GetProgram(self, request, context):
        await self.release.wait()
        return programs_service_pb2.GetProgramResponse(program=program_pb2.Program(id=request.program_id))


def test_stopping_reports_not_serving_lets_calls_finish_then_stops_components(tmp_path):
    async def scenario():
        events: list[str] = []
        slow = SlowPrograms()
        component = Recording("slow", events)
        component.service_names = ("qruntime.programs.v1.ProgramsService",)
        component.public_methods = frozenset({"/qruntime.programs.v1.ProgramsService/GetProgram"})
        component.register = lambda server: programs_service_pb2_grpc.add_ProgramsServiceServicer_to_server(
            slow, server)
        suite = await start_server([component], ServerSettings(port=0, data_dir=str(tmp_path)))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            seen = [(await watch.read()).status]
            call = programs_service_pb2_grpc.ProgramsServiceStub(channel).GetProgram(
                programs_service_pb2.GetProgramRequest(program_id="p"))
            await asyncio.sleep(0.2)  # the call is in flight
            stopping = asyncio.create_task(suite.stop(5))
            seen.append((await watch.read()).status)
            watch.cancel()
            events.append("call answered")
            slow.release.set()
            answer = await call
            await stopping
        return seen, answer.program.id, events

    seen, answered, events = asyncio.run(scenario())
    assert seen == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
    assert answered == "p"
    assert events == ["start slow", "call answered", "stop slow"]


def test_components_drain_while_the_server_still_answers(tmp_path):
    """At shutdown a component's own work (the jobs executor) stops before its peers stop answering."""
    import asyncio

    from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

    from qruntime_kit.server import start_server
    from qruntime_suite.embedded import SuiteSettings, build_components

    events: list[str] = []

    class Draining:
        name, service_names, public_methods = "draining", ("test.Draining",), frozenset()

        def register(self, server) -> None: ...

        async def start(self, runtime) -> None:
            self.address = runtime.address

        async def drain(self) -> None:
            channel = grpc.aio.insecure_channel(self.address)
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            await stub.ListSigningKeys(auth_service_pb2.ListSigningKeysRequest(), timeout=5)
            await channel.close()
            events.append("drained with the server answering")

        async def stop(self) -> None:
            events.append("stopped")

    async def scenario():
        settings = SuiteSettings(port=0, data_dir=str(tmp_path), grace_seconds=0)
        suite = await start_server([*build_components(settings, ("auth",)), Draining()], settings)
        await suite.stop(0)

    asyncio.run(scenario())
    assert events == ["drained with the server answering", "stopped"]
