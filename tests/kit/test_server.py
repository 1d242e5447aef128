"""The kit's server over a real socket: health, reflection, request ids, error mapping."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from qruntime_kit.errors import from_rpc_error


def test_health_serves_each_service_and_the_whole(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "qruntime.auth.v1.AuthService"):
            status = stub.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


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
        assert dict(call.initial_metadata())["x-request-id"] == "req-123"
        _, call = stub.ListSigningKeys.with_call(auth_service_pb2.ListSigningKeysRequest())
        assert len(dict(call.initial_metadata())["x-request-id"]) == 32


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
    import asyncio

    from qruntime_kit.server import start_server
    from qruntime_suite.embedded import SuiteSettings, build_components

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
