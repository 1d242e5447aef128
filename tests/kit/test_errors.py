"""The one error mapping: ServiceError -> rich status -> ServiceError keeps code, reason and details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import status_pb2
from grpc.aio import AioRpcError, Metadata

from qruntime_kit.errors import NotFound, ServiceError, from_rpc_error


def rpc_error(status: grpc.Status) -> AioRpcError:
    return AioRpcError(status.code, Metadata(), Metadata(*status.trailing_metadata), status.details)


def test_a_rich_status_round_trips():
    sent = NotFound("job 'x' not found", reason="JOB_NOT_FOUND", metadata={"job_id": "x"},
                    field_violations=[("job_id", "unknown")])
    got = from_rpc_error(rpc_error(sent.to_status("jobs.qruntime")))
    assert isinstance(got, NotFound)
    assert (got.code, got.reason, got.domain, got.message) == (
        grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND", "jobs.qruntime", "job 'x' not found")
    assert (got.metadata, got.field_violations) == ({"job_id": "x"}, [("job_id", "unknown")])


@pytest.mark.parametrize(("code", "reason"), [
    (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_UNAVAILABLE"),
    (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    (grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED"),
    (grpc.StatusCode.ABORTED, "ABORTED"),
    (grpc.StatusCode.CANCELLED, "CANCELLED"),
])
def test_a_plain_status_keeps_its_code_when_passed_on(code, reason):
    got = from_rpc_error(AioRpcError(code, Metadata(), Metadata(), "upstream said no"))
    assert (got.code, got.reason, got.message) == (code, reason, "upstream said no")
    assert got.to_status("jobs.qruntime").code == code


def test_a_status_whose_details_disagree_with_the_call_is_read_as_a_plain_one():
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="other words")
    trailing = Metadata(("grpc-status-details-bin", status.SerializeToString()))
    got = from_rpc_error(AioRpcError(grpc.StatusCode.INTERNAL, Metadata(), trailing, "boom"))
    assert isinstance(got, ServiceError)
    assert (got.code, got.reason, got.message) == (grpc.StatusCode.INTERNAL, "INTERNAL", "boom")


def test_an_error_quoting_a_huge_input_still_arrives_whole(start_suite):
    """Messages and metadata quote the caller's input; gRPC caps trailers at 8 KiB, so they are clipped."""
    import grpc
    from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

    from qruntime_kit.errors import from_rpc_error

    suite = start_suite()
    huge = "x" * 20_000
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        try:
            stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=suite.api_key, instance=huge))
        except grpc.RpcError as err:
            error = from_rpc_error(err)
        else:
            raise AssertionError("an unknown instance was accepted")
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")
    assert len(error.message) <= 500 and error.message.endswith("…")
    assert len(error.metadata["instance"]) <= 100
