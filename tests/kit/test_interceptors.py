"""What the kit's interceptors do to every call: request ids, and text a store can hold."""

from __future__ import annotations

import grpc
import pytest
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from qruntime.devices.v1 import backend_pb2
from qruntime.programs.v1 import program_pb2, programs_service_pb2

from qruntime_kit.errors import from_rpc_error
from qruntime_kit.interceptors import nul_violations


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "a\"quote"])
def test_a_request_id_that_does_not_look_like_one_is_replaced(start_suite, sent):
    suite = start_suite()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        _, call = stub.ListSigningKeys.with_call(auth_service_pb2.ListSigningKeysRequest(),
                                                 metadata=((("x-request-id", sent)),))
    echoed = dict(call.initial_metadata())["x-request-id"]
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
