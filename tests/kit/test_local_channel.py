"""The local channel against the wire: the same calls to the same kit server, once through a real
channel to its port and once in process, give the same answers and the same errors."""

from __future__ import annotations

import asyncio
import contextvars
import json

import grpc
import pytest
import structlog
from google.protobuf import duration_pb2
from google.protobuf.wrappers_pb2 import StringValue
from qruntime.devices.v1 import devices_service_pb2, devices_service_pb2_grpc
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_kit.errors import ResourceExhausted, ServiceError
from qruntime_kit.local_channel import LocalChannel
from qruntime_kit.outbound import MAX_MESSAGE_BYTES, call
from qruntime_kit.server import start_server
from qruntime_kit.settings import ServerSettings

SOURCE = "def main(backend, user_messenger, **inputs):\n    return 1\n"
MINUTE = duration_pb2.Duration(seconds=60)
GET_PROGRAM = "/qruntime.programs.v1.ProgramsService/GetProgram"


def described(outcome):
    """What a caller can tell of an outcome: the response, or every part of the ServiceError."""
    if isinstance(outcome, ServiceError):
        return (type(outcome), outcome.code, outcome.message, outcome.reason, outcome.domain, outcome.metadata,
                outcome.field_violations, outcome.retry_after)
    return outcome


async def both(address: str, local: LocalChannel, ask):
    """ask(channel) through a real channel to address, then through the local channel."""
    outcomes = []
    async with grpc.aio.insecure_channel(address) as real:
        for channel in (real, local):
            try:
                outcomes.append(await ask(channel))
            except ServiceError as err:
                outcomes.append(err)
    return outcomes


@pytest.fixture(scope="module")
def suite(start_module_suite):
    return start_module_suite("programs", "devices")


def trail(suite, instance_crn: str, request_id: str) -> list[dict]:
    """The audit events of the instance's account with request_id."""
    account_id = instance_crn.split(":")[6].removeprefix("a/")
    return suite.auth_store.audit_events(account_id, where={"request_id": request_id}, before_id=None, limit=5)


def compare(suite, ask):
    """The two outcomes of ask, asserted the same; returns the one."""
    real, local = suite.run(both(suite.address, suite.suite.runtime.local, ask))
    assert described(local) == described(real)
    return local


def test_the_embedded_suite_calls_itself_through_the_local_channel(suite):
    assert isinstance(suite.suite.runtime.channel_to(""), LocalChannel)
    assert not isinstance(suite.suite.runtime.channel_to(suite.address), LocalChannel)  # a URL: the wire


def test_responses_are_the_same(suite):
    metadata = suite.metadata()

    async def program(channel):
        stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        return await call(stub.GetProgram, programs_service_pb2.GetProgramRequest(program_id="sampler"),
                          metadata=metadata)

    async def backends(channel):
        stub = devices_service_pb2_grpc.DevicesServiceStub(channel)
        return await call(stub.ListBackends, devices_service_pb2.ListBackendsRequest(), metadata=metadata)

    assert compare(suite, program).program.id == "sampler"
    assert len(compare(suite, backends).backends) > 0


def test_errors_are_the_same(suite):
    metadata = suite.metadata()

    async def missing(channel):
        stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        return await call(stub.GetProgram, programs_service_pb2.GetProgramRequest(program_id="nope"),
                          metadata=metadata)

    async def invalid(channel):  # field violations
        stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        return await call(stub.CreateProgram, programs_service_pb2.CreateProgramRequest(
            program=program_pb2.Program(name="", data="")), metadata=metadata)

    async def nul(channel):  # refused by an interceptor, not the servicer
        stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        return await call(stub.GetProgram, programs_service_pb2.GetProgramRequest(program_id="a\x00"),
                          metadata=metadata)

    assert compare(suite, missing).code == grpc.StatusCode.NOT_FOUND
    error = compare(suite, invalid)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.field_violations
    assert compare(suite, nul).reason == "NUL_CHARACTER"


def test_an_undecodable_request_is_refused_the_same(suite):
    metadata = suite.metadata()

    async def garbage(channel):
        method = channel.unary_unary(GET_PROGRAM, request_serializer=lambda data: data,
                                     response_deserializer=programs_service_pb2.GetProgramResponse.FromString)
        return await call(method, b"\x0a\xff\xff", metadata=metadata)

    assert compare(suite, garbage).reason == "UNDECODABLE_REQUEST"


@pytest.mark.parametrize("metadata, reason", [((), "TOKEN_MISSING"),
                                              ((("authorization", "Bearer forged"),), "TOKEN_INVALID")])
def test_a_missing_or_invalid_token_is_unauthenticated_the_same(suite, metadata, reason):
    async def ask(channel):
        stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        return await call(stub.GetProgram, programs_service_pb2.GetProgramRequest(program_id="sampler"),
                          metadata=metadata)

    error = compare(suite, ask)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == reason


def test_a_refused_action_is_refused_and_audited_the_same(suite):
    reader_key, reader_crn = suite.make_user(role="reader", instance_name="local-readers")
    reader = suite.metadata(suite.token(reader_key, reader_crn))
    request_ids = iter(["refused-real", "refused-local"])

    async def create(channel):
        stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        return await call(stub.CreateProgram, programs_service_pb2.CreateProgramRequest(
            program=program_pb2.Program(name="nope", data=SOURCE)),
            metadata=(*reader, ("x-request-id", next(request_ids))))

    assert compare(suite, create).code == grpc.StatusCode.PERMISSION_DENIED
    # Each call was answered once its event was written: both are in the trail now, alike.
    events = [trail(suite, reader_crn, rid) for rid in ("refused-real", "refused-local")]
    assert [len(e) for e in events] == [1, 1]
    real, local = ({k: v for k, v in e[0].items() if k not in ("id", "time", "request_id")} for e in events)
    assert local == real
    assert (local["outcome"], local["code"], local["target"]) == ("denied", "PERMISSION_DENIED", "nope")


def test_an_audited_call_is_recorded_as_over_the_wire(suite):
    metadata = suite.metadata()
    names = iter(["audited-real", "audited-local"])

    async def create(channel):
        name = next(names)
        stub = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        program = program_pb2.Program(name=name, data=SOURCE, max_execution_time=MINUTE)
        await call(stub.CreateProgram, programs_service_pb2.CreateProgramRequest(program=program),
                   metadata=(*metadata, ("x-request-id", name)))
        return name

    suite.run(both(suite.address, suite.suite.runtime.local, create))
    events = [trail(suite, suite.instance, rid) for rid in ("audited-real", "audited-local")]
    assert [len(e) for e in events] == [1, 1]
    real, local = ({k: v for k, v in e[0].items() if k not in ("id", "time", "request_id", "target")}
                   for e in events)
    assert local == real
    assert (local["outcome"], local["action"]) == ("success", "quantum-computing.program.create")
    assert events[1][0]["target"] == "audited-local"


def test_the_request_id_is_passed_on_and_echoed(suite):
    metadata = (*suite.metadata(), ("x-request-id", "passed-on-1"))

    async def ask():
        stub = programs_service_pb2_grpc.ProgramsServiceStub(suite.suite.runtime.local)
        answer = stub.GetProgram(programs_service_pb2.GetProgramRequest(program_id="sampler"),
                                 metadata=metadata, timeout=10)
        return dict(await answer.trailing_metadata()), (await answer).program.id

    trailing, program = suite.run(ask())
    assert (trailing["x-request-id"], program) == ("passed-on-1", "sampler")


# A probe service, to see the callee's side: what it sees of its caller, and when it is cancelled.
CALLER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("caller_var", default="")


class Probe:
    name, service_names = "probe", ("test.Probe",)
    public_methods = frozenset({"/test.Probe/Echo", "/test.Probe/Fail", "/test.Probe/Hang"})

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = 0

    async def echo(self, request: StringValue, context) -> StringValue:
        seen = {"request_id": structlog.contextvars.get_contextvars().get("request_id"),
                "caller_var": CALLER_VAR.get(), "time_remaining": context.time_remaining(),
                "metadata": dict(context.invocation_metadata()).get("x-probe", "")}
        return StringValue(value=json.dumps(seen))

    async def fail(self, request, context):
        raise ResourceExhausted("slow down", reason="PROBE_LIMIT", metadata={"limit": 1},
                                field_violations=[("value", "too much")], retry_after=2.5)

    async def hang(self, request, context):
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def register(self, server) -> None:
        def method(behaviour):
            return grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=StringValue.FromString,
                response_serializer=StringValue.SerializeToString)

        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "test.Probe", {"Echo": method(self.echo), "Fail": method(self.fail), "Hang": method(self.hang)}),))

    async def start(self, runtime) -> None: ...

    async def stop(self) -> None: ...


def probe_method(channel, name: str):
    return channel.unary_unary(f"/test.Probe/{name}", request_serializer=StringValue.SerializeToString,
                               response_deserializer=StringValue.FromString)


def run_with_probe(tmp_path, scenario):
    """scenario(probe, address, local channel), run against a kit server serving the probe alone."""

    async def main():
        probe = Probe()
        served = await start_server([probe], ServerSettings(port=0, data_dir=str(tmp_path), grace_seconds=0))
        try:
            return await scenario(probe, f"127.0.0.1:{served.port}", served.runtime.channel_to(""))
        finally:
            await served.stop(0)

    return asyncio.run(main())


def test_retry_info_and_every_detail_come_back_the_same(tmp_path):
    async def scenario(probe, address, local):
        return await both(address, local, lambda channel: call(probe_method(channel, "Fail"), StringValue()))

    real, local = run_with_probe(tmp_path, scenario)
    assert described(local) == described(real)
    assert (local.code, local.reason, local.domain) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "PROBE_LIMIT",
                                                        "probe.qruntime")
    assert (local.metadata, local.field_violations, local.retry_after) == ({"limit": "1"}, [("value", "too much")],
                                                                           2.5)


def test_the_callee_runs_in_a_context_of_its_own_with_the_callers_metadata_and_deadline(tmp_path):
    async def scenario(probe, address, local):
        CALLER_VAR.set("the caller's")
        structlog.contextvars.bind_contextvars(request_id="the-callers-own")
        try:
            answer = await call(probe_method(local, "Echo"), StringValue(), metadata=(("x-probe", "sent"),),
                                timeout=5)
        finally:
            structlog.contextvars.clear_contextvars()
        return json.loads(answer.value)

    seen = run_with_probe(tmp_path, scenario)
    assert seen["caller_var"] == "" and seen["request_id"] != "the-callers-own"
    assert seen["metadata"] == "sent"
    assert 4 < seen["time_remaining"] <= 5


def test_a_deadline_that_passes_is_deadline_exceeded_and_cancels_the_callee(tmp_path):
    async def scenario(probe, address, local):
        outcomes = await both(address, local, lambda channel: call(probe_method(channel, "Hang"), StringValue(),
                                                                   timeout=0.3))
        await asyncio.sleep(0.2)  # the callee's cancellation runs on
        return outcomes, probe.cancelled

    (real, local), cancelled = run_with_probe(tmp_path, scenario)
    # gRPC's own words vary ("Deadline Exceeded", "Stream removed (Deadline Exceeded)"): all else is the same
    assert described(local)[:2] + described(local)[3:] == described(real)[:2] + described(real)[3:]
    assert (local.code, local.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_UNAVAILABLE")
    assert cancelled == 2  # the real call's and the local one's


def test_a_cancelled_caller_cancels_the_callee(tmp_path):
    async def scenario(probe, address, local):
        caller = asyncio.create_task(call(probe_method(local, "Hang"), StringValue(), timeout=30))
        await asyncio.wait_for(probe.started.wait(), 5)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.05)
        return probe.cancelled

    assert run_with_probe(tmp_path, scenario) == 1


def test_an_unknown_method_is_unimplemented_the_same(tmp_path):
    async def scenario(probe, address, local):
        return await both(address, local, lambda channel: call(probe_method(channel, "Nothing"), StringValue()))

    real, local = run_with_probe(tmp_path, scenario)
    assert described(local) == described(real)
    assert local.code == grpc.StatusCode.UNIMPLEMENTED


def test_a_request_past_the_message_limit_is_refused_the_same(tmp_path):
    too_big = StringValue(value="x" * (MAX_MESSAGE_BYTES + 1))

    async def scenario(probe, address, local):
        return await both(address, local, lambda channel: call(probe_method(channel, "Echo"), too_big))

    real, local = run_with_probe(tmp_path, scenario)
    # The words differ by which end refused it: this test's channel sends without a limit, the server
    # refuses ("SERVER: Received message larger..."); the suite's channels refuse to send ("Sent message...").
    assert described(local)[:2] + described(local)[3:] == described(real)[:2] + described(real)[3:]
    assert (local.code, local.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED")
    assert local.message.startswith("Sent message larger than max")
