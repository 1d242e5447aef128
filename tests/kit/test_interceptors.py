"""What the kit's interceptor does to every call: request ids, log lines, errors, and text a store can hold."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_kit.audit import AuditSink
from qruntime_kit.errors import from_rpc_error
from qruntime_kit.interceptors import CallInterceptor, nul_violations
from qruntime_kit.local_channel import LocalContext, _CallDetails
from qruntime_kit.server import start_server
from qruntime_kit.settings import ServerSettings


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "a\"quote"])
def test_a_request_id_that_does_not_look_like_one_is_replaced(start_suite, sent):
    suite = start_suite()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        _, call = stub.ListSigningKeys.with_call(auth_service_pb2.ListSigningKeysRequest(),
                                                 metadata=((("x-request-id", sent)),))
    echoed = dict(call.trailing_metadata())["x-request-id"]
    assert echoed != sent and len(echoed) == 32


def test_nul_characters_are_found_at_any_depth():
    program = program_pb2.Program(
        name="ok", description="bad\x00", data="ok",
        inputs=[program_pb2.ProgramInput(name="fine"), program_pb2.ProgramInput(name="x", description="\x00")],
    )
    request = programs_service_pb2.CreateProgramRequest(program=program)
    assert nul_violations(request) == [
        ("program.description", "must not hold NUL characters"),
        ("program.inputs[1].description", "must not hold NUL characters"),
    ]
    counts = backend_pb2.CircuitResult(counts={"00": 1, "1\x00": 2})
    assert nul_violations(counts) == [("counts['1\\x00']", "must not hold NUL characters")]
    assert nul_violations(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(name="ok"))) == []


def test_a_request_with_a_nul_character_is_the_callers_error(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=suite.api_key, instance="de\x00fault"))
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NUL_CHARACTER")
    assert error.field_violations == [("instance", "must not hold NUL characters")]


def rpc_lines(logs: list[dict]) -> list[dict]:
    return [line for line in logs if line["event"] == "rpc"]


def test_every_served_call_logs_one_line_with_its_request_id_caller_and_outcome(start_suite):
    suite = start_suite("devices")
    metadata = suite.metadata()
    with suite.channel() as channel, structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        devices = devices_service_pb2_grpc.DevicesServiceStub(channel)
        devices.GetBackend(devices_service_pb2.GetBackendRequest(name="ibmq_qasm_simulator"),
                           metadata=(*metadata, ("x-request-id", "req-log-1")))
        with pytest.raises(grpc.RpcError):
            devices.GetBackend(devices_service_pb2.GetBackendRequest(name="no-such"),
                               metadata=(*metadata, ("x-request-id", "req-log-2")))
        with pytest.raises(grpc.RpcError):  # no token: refused before the servicer runs, logged all the same
            devices.GetBackend(devices_service_pb2.GetBackendRequest(name="ibmq_qasm_simulator"),
                               metadata=(("x-request-id", "req-log-3"),))
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())  # probes are not logged
    method = "/qruntime.devices.v1.DevicesService/GetBackend"
    # (less the signing keys, which devices fetches from auth over gRPC to check the first token)
    lines = [line for line in rpc_lines(logs) if line["method"] != "/qruntime.auth.v1.AuthService/ListSigningKeys"]
    assert [(line["request_id"], line["method"], line["code"]) for line in lines] == [
        ("req-log-1", method, "OK"), ("req-log-2", method, "NOT_FOUND"), ("req-log-3", method, "UNAUTHENTICATED")]
    assert lines[0]["subject"] == lines[1]["subject"] != "" and "subject" not in lines[2]
    assert all(line["component"] == "server" and isinstance(line["ms"], float) for line in lines)


class Failing:
    """A component whose one method fails as no servicer should."""

    name, service_names = "failing", ("qruntime.programs.v1.ProgramsService",)
    public_methods = frozenset({"/qruntime.programs.v1.ProgramsService/GetProgram"})

    def register(self, server) -> None:
        class Servicer(programs_service_pb2_grpc.ProgramsServiceServicer):
            async def GetProgram(self, request, context):
                raise RuntimeError("a bug")

        programs_service_pb2_grpc.add_ProgramsServiceServicer_to_server(Servicer(), server)

    async def start(self, runtime) -> None: ...

    async def stop(self) -> None: ...


def test_an_unexpected_error_is_internal_for_the_caller_and_logged_with_its_traceback(tmp_path):
    async def scenario():
        suite = await start_server([Failing()], ServerSettings(port=0, data_dir=str(tmp_path), grace_seconds=0))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.port}") as channel:
                stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetProgram(programs_service_pb2.GetProgramRequest(program_id="p"))
        finally:
            await suite.stop(0)
        return from_rpc_error(caught.value)

    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        error = asyncio.run(scenario())
    assert (error.code, error.reason, error.domain) == (grpc.StatusCode.INTERNAL, "INTERNAL", "failing.qruntime")
    assert "a bug" not in error.message
    unhandled = [line for line in logs if line["event"] == "unhandled error"]
    assert len(unhandled) == 1 and unhandled[0]["method"] == "/qruntime.programs.v1.ProgramsService/GetProgram"
    assert unhandled[0]["exc_info"] is True
    assert [line["code"] for line in rpc_lines(logs)] == ["INTERNAL"]


def test_a_methods_handler_is_wrapped_once_and_again_when_the_server_gives_another():
    async def echo(request, context):
        return request

    async def shout(request, context):
        return request.upper()

    interceptor = CallInterceptor(domains={}, audit=AuditSink(lambda events: None), verifier=None,
                                  public_methods={"/test.Echo/Say"})
    details = _CallDetails("/test.Echo/Say", ())
    handlers = [grpc.unary_unary_rpc_method_handler(echo)]

    async def continuation(_):
        return handlers[0]

    async def scenario():
        first = await interceptor.intercept_service(continuation, details)
        again = await interceptor.intercept_service(continuation, details)
        handlers[0] = grpc.unary_unary_rpc_method_handler(shout)
        other = await interceptor.intercept_service(continuation, details)
        return first, again, other, await other.unary_unary(b"hi", LocalContext((), None))

    first, again, other, answer = asyncio.run(scenario())
    assert again is first and other is not first
    assert answer == b"HI"
