"""The front door over real sockets, in front of a stand-in service that shows what reached it.

The stand-in answers ProgramsService.GetProgram: it reports the metadata and deadline it received,
sends metadata of its own, or fails with a rich status, as the program_id asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qruntime.programs.v1 import program_pb2, programs_service_pb2_grpc
from qruntime.programs.v1 import programs_service_pb2 as pb

from qruntime_kit.errors import NotFound, from_rpc_error
from qruntime_suite.gateway import GatewaySettings, start_gateway

GET_PROGRAM = "/qruntime.programs.v1.ProgramsService/GetProgram"


class StandIn(programs_service_pb2_grpc.ProgramsServiceServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def GetProgram(self, request, context):
        received = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in context.invocation_metadata()}
        request_id = ("x-request-id", received.get("x-request-id", ""))  # as the suite's services answer it
        if request.program_id == "missing":
            error = NotFound("program 'missing' not found", reason="PROGRAM_NOT_FOUND",
                             metadata={"program_id": "missing"}, field_violations=[("program_id", "unknown")])
            status = error.to_status("programs.qruntime")
            await context.abort_with_status(status._replace(trailing_metadata=(*status.trailing_metadata, request_id)))
        await context.send_initial_metadata((("x-initial", "kept"),))  # a callee's own, if it sends any
        if request.program_id == "slow":
            await self.release.wait()
        context.set_trailing_metadata((("x-trailer", "kept"), request_id))
        report = {"metadata": received, "time_remaining": context.time_remaining()}
        return pb.GetProgramResponse(program=program_pb2.Program(id=request.program_id, description=json.dumps(report)))


@contextlib.asynccontextmanager
async def gateway_in_front(stand_in: StandIn) -> AsyncIterator:
    downstream = grpc.aio.server()
    programs_service_pb2_grpc.add_ProgramsServiceServicer_to_server(stand_in, downstream)
    url = f"127.0.0.1:{downstream.add_insecure_port('127.0.0.1:0')}"
    await downstream.start()
    gateway = await start_gateway(GatewaySettings(
        port=0, http_port=0, auth_url=url, programs_url=url, jobs_url=url, devices_url=url, grace_seconds=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            yield gateway, channel
    finally:
        await gateway.stop(0)
        await downstream.stop(0)


def test_rich_errors_come_back_unchanged_with_the_request_id():
    async def scenario():
        async with gateway_in_front(StandIn()) as (_gateway, channel):
            call = programs_service_pb2_grpc.ProgramsServiceStub(channel).GetProgram(
                pb.GetProgramRequest(program_id="missing"), metadata=(("x-request-id", "req-1"),))
            try:
                await call
            except grpc.aio.AioRpcError as err:
                return from_rpc_error(err), err.trailing_metadata()
            raise AssertionError("the error did not come through")

    error, trailing = asyncio.run(scenario())
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert error.domain == "programs.qruntime"
    assert error.message == "program 'missing' not found"
    assert error.metadata == {"program_id": "missing"}
    assert error.field_violations == [("program_id", "unknown")]
    assert dict(trailing)["x-request-id"] == "req-1"


def test_metadata_deadline_and_the_answers_metadata_are_forwarded():
    async def scenario():
        async with gateway_in_front(StandIn()) as (_gateway, channel):
            stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
            sent = (("authorization", "Bearer t0k"), ("x-request-id", "req-2"), ("x-blob-bin", b"\x00\x01"))
            call = stub.GetProgram(pb.GetProgramRequest(program_id="p"), metadata=sent, timeout=5)
            response = await call
            without_deadline = await stub.GetProgram(pb.GetProgramRequest(program_id="p"))
            return response, await call.initial_metadata(), await call.trailing_metadata(), without_deadline

    response, initial, trailing, without_deadline = asyncio.run(scenario())
    report = json.loads(response.program.description)
    assert {k: report["metadata"].get(k) for k in ("authorization", "x-request-id", "x-blob-bin")} == {
        "authorization": "Bearer t0k", "x-request-id": "req-2", "x-blob-bin": "0001"}
    assert 0 < report["time_remaining"] < 6  # the caller's 5 s, give or take the clock's rounding
    assert json.loads(without_deadline.program.description)["time_remaining"] is None
    assert dict(initial)["x-initial"] == "kept"
    assert (dict(trailing)["x-trailer"], dict(trailing)["x-request-id"]) == ("kept", "req-2")


def test_unknown_methods_and_services_are_unimplemented():
    async def scenario():
        async with gateway_in_front(StandIn()) as (_gateway, channel):
            codes = []
            for path in ("/qruntime.programs.v1.ProgramsService/Nope", "/qruntime.programs.v1.Nope/GetProgram",
                         "/elsewhere.v1.Service/Get", "/grpc.reflection.v1alpha.ServerReflection/Info"):
                try:
                    await channel.unary_unary(path)(b"", timeout=5)
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code())
            return codes

    assert asyncio.run(scenario()) == [grpc.StatusCode.UNIMPLEMENTED] * 4


def test_stopping_reports_not_serving_and_lets_calls_in_flight_finish():
    async def scenario():
        stand_in = StandIn()
        async with gateway_in_front(stand_in) as (gateway, channel):
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            seen = [(await watch.read()).status]
            slow = programs_service_pb2_grpc.ProgramsServiceStub(channel).GetProgram(
                pb.GetProgramRequest(program_id="slow"))
            await asyncio.sleep(0.2)  # the call is in flight
            stopping = asyncio.create_task(gateway.stop(5))
            seen.append((await watch.read()).status)
            watch.cancel()
            stand_in.release.set()
            answer = await slow
            await stopping
            return seen, answer.program.id

    seen, answered = asyncio.run(scenario())
    assert seen == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
    assert answered == "slow"


def test_a_service_that_is_down_is_unavailable():
    async def scenario():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            nobody = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes
        gateway = await start_gateway(GatewaySettings(
            port=0, http_port=0, auth_url=nobody, programs_url=nobody, jobs_url=nobody, devices_url=nobody))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
                try:
                    await stub.GetProgram(pb.GetProgramRequest(program_id="p"), timeout=10)
                except grpc.aio.AioRpcError as err:
                    return err.code()
        finally:
            await gateway.stop(0)

    assert asyncio.run(scenario()) == grpc.StatusCode.UNAVAILABLE
