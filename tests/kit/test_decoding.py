"""Bytes that are not the request message (corrupt protobuf, invalid UTF-8 in a string field) are
the caller's INVALID_ARGUMENT on every service, through a real server, never UNKNOWN."""

from __future__ import annotations

import grpc
import pytest
from qruntime.auth.v1 import auth_service_pb2

from qruntime_kit.errors import from_rpc_error

CORRUPT = b"\xff\xff\xff"
BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1, a string, holding two bytes that are not UTF-8


@pytest.fixture(scope="module")
def suite(start_module_suite):
    return start_module_suite("programs", "devices", "jobs", warm_hosts=0)


@pytest.mark.parametrize("data", [CORRUPT, BAD_UTF8], ids=["corrupt", "bad-utf8"])
@pytest.mark.parametrize("method", [
    "/qruntime.auth.v1.AuthService/CreateToken",  # open: no token needed
    "/qruntime.jobs.v1.JobsService/GetJob",
    "/qruntime.programs.v1.ProgramsService/GetProgram",
    "/qruntime.devices.v1.DevicesService/GetBackend",
])
def test_undecodable_requests_are_invalid_argument(suite, method, data):
    with suite.channel() as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as caught:
            call(data, metadata=suite.metadata(), timeout=10)
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST")
    assert "is not a valid" in error.message


def test_a_valid_request_still_passes(suite):
    with suite.channel() as channel:
        call = channel.unary_unary("/qruntime.auth.v1.AuthService/CreateToken")
        request = auth_service_pb2.CreateTokenRequest(api_key=suite.api_key, instance=suite.instance)
        reply = call(request.SerializeToString(), timeout=10)
    assert auth_service_pb2.CreateTokenResponse.FromString(reply).token
