"""Mapping failed calls to exceptions: status code to class, rich details to attributes and message.

These tests use a purpose-built server (a generic handler on a real socket), not the suite: they need
every status code, with and without rich details, on demand, and the real services cannot be made to
answer ALREADY_EXISTS, RESOURCE_EXHAUSTED, ABORTED or a bare INTERNAL without details at will. How
the real services' errors reach users is tested against the suite in test_client_service.py and
test_client_transport.py.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator, Sequence
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2, wrappers_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from qruntime._channel import Transport
from qruntime.exceptions import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    IBMInputValueError,
    IBMNotAuthorizedError,
    NotFoundError,
    ResourceExhaustedError,
    RuntimeServiceError,
    ServiceUnavailableError,
    from_grpc_error,
)

METHOD = "/qruntime.test.v1.TestService/Fail"


def rich_abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    violations: Sequence[tuple[str, str]] = (),
) -> None:
    """Abort the call the way the real servers do: google.rpc.Status with ErrorInfo and BadRequest."""
    details = []
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain="test.qruntime", metadata=metadata or {})
        details.append(any_pb2.Any())
        details[-1].Pack(info)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
        details.append(any_pb2.Any())
        details[-1].Pack(bad)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    context.abort_with_status(rpc_status.to_status(status))


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    def fail(request: wrappers_pb2.StringValue, context: grpc.ServicerContext) -> empty_pb2.Empty:
        """Fail with the status code named by the request; "PLAIN" aborts without rich details."""
        if request.value == "PLAIN":
            context.abort(grpc.StatusCode.INTERNAL, "boom")
        if request.value == "NOT_FOUND":
            rich_abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "program 'nope' not found",
                "PROGRAM_NOT_FOUND",
                {"program_id": "nope"},
            )
        if request.value == "INVALID_ARGUMENT":
            violations = [("inputs.circuits", "must be circuits"), ("options.log_level", "unknown level")]
            rich_abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid inputs",
                "INVALID_INPUTS",
                violations=violations,
            )
        code = grpc.StatusCode[request.value]
        rich_abort(context, code, f"failed with {code.name}", f"REASON_{code.name}")
        return empty_pb2.Empty()

    handler = grpc.method_handlers_generic_handler(
        "qruntime.test.v1.TestService",
        {
            "Fail": grpc.unary_unary_rpc_method_handler(
                fail,
                request_deserializer=wrappers_pb2.StringValue.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture(scope="module")
def fail_call(address: str) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    with grpc.insecure_channel(address) as channel:
        yield channel.unary_unary(
            METHOD,
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )


def raised(fail_call: grpc.UnaryUnaryMultiCallable, what: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fail_call(wrappers_pb2.StringValue(value=what), timeout=5)
    return info.value


def test_not_found_carries_reason_domain_metadata(fail_call) -> None:
    error = from_grpc_error(raised(fail_call, "NOT_FOUND"), request_id="abc")
    assert type(error) is NotFoundError
    assert str(error) == "NOT_FOUND (PROGRAM_NOT_FOUND): program 'nope' not found"
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert (error.reason, error.domain, error.metadata) == (
        "PROGRAM_NOT_FOUND",
        "test.qruntime",
        {"program_id": "nope"},
    )
    assert error.message == "program 'nope' not found"
    assert error.field_violations == []
    assert error.request_id == "abc"


def test_invalid_argument_carries_field_violations(fail_call) -> None:
    error = from_grpc_error(raised(fail_call, "INVALID_ARGUMENT"))
    assert type(error) is IBMInputValueError and isinstance(error, ValueError)
    assert error.field_violations == [
        FieldViolation("inputs.circuits", "must be circuits"),
        FieldViolation("options.log_level", "unknown level"),
    ]
    assert str(error) == (
        "INVALID_ARGUMENT (INVALID_INPUTS): invalid inputs "
        "[inputs.circuits: must be circuits; options.log_level: unknown level]"
    )


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("UNAUTHENTICATED", IBMNotAuthorizedError),
        ("PERMISSION_DENIED", IBMNotAuthorizedError),
        ("ALREADY_EXISTS", AlreadyExistsError),
        ("FAILED_PRECONDITION", FailedPreconditionError),
        ("RESOURCE_EXHAUSTED", ResourceExhaustedError),
        ("UNAVAILABLE", ServiceUnavailableError),
        ("DEADLINE_EXCEEDED", ServiceUnavailableError),
        ("INTERNAL", RuntimeServiceError),
        ("ABORTED", RuntimeServiceError),
    ],
)
def test_status_code_chooses_class(fail_call, code: str, cls: type) -> None:
    error = from_grpc_error(raised(fail_call, code))
    assert type(error) is cls
    assert error.code == grpc.StatusCode[code]
    assert error.reason == f"REASON_{code}"
    assert str(error) == f"{code} (REASON_{code}): failed with {code}"


def test_status_without_details(fail_call) -> None:
    error = from_grpc_error(raised(fail_call, "PLAIN"))
    assert type(error) is RuntimeServiceError
    assert (error.reason, error.metadata, error.field_violations) == ("", {}, [])
    assert str(error) == "INTERNAL: boom"


def test_aio_errors_map_the_same(address: str) -> None:
    async def call() -> grpc.RpcError:
        async with grpc.aio.insecure_channel(address) as channel:
            method = channel.unary_unary(
                METHOD,
                request_serializer=wrappers_pb2.StringValue.SerializeToString,
                response_deserializer=empty_pb2.Empty.FromString,
            )
            try:
                await method(wrappers_pb2.StringValue(value="NOT_FOUND"), timeout=5)
            except grpc.RpcError as err:
                return err
        raise AssertionError("the call did not fail")

    error = from_grpc_error(asyncio.run(call()))
    assert type(error) is NotFoundError and error.reason == "PROGRAM_NOT_FOUND"


def test_errors_pickle_with_their_details(fail_call) -> None:
    error = from_grpc_error(raised(fail_call, "INVALID_ARGUMENT"), request_id="r1")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is IBMInputValueError
    assert (copy.code, copy.reason, copy.field_violations, copy.request_id) == (
        error.code,
        error.reason,
        error.field_violations,
        "r1",
    )
    assert str(copy) == str(error)


def test_transport_maps_errors_and_unreachable_servers(address: str) -> None:
    transport = Transport("127.0.0.1:1", "key", "instance", timeout=2)
    try:
        with pytest.raises(ServiceUnavailableError) as info:
            transport.tokens.token()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert len(info.value.request_id) == 32
    finally:
        transport.close()
