"""Domain errors and their single mapping to rich gRPC statuses.

Servicers and domain code raise a ServiceError subclass; the error interceptor turns it into a
google.rpc.Status with an ErrorInfo (stable UPPER_SNAKE reason, the service's domain, metadata) and,
where fields are at fault, a BadRequest. from_rpc_error does the reverse, so an error from a
downstream service keeps its code and reason when it is passed on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

FieldViolation = tuple[str, str]


class ServiceError(Exception):
    """An error a caller should see, with a gRPC status code and a stable reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        domain: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds; sent as RetryInfo
        self.message = message
        self.reason = reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.field_violations = list(field_violations)
        self.domain = domain

    def to_status(self, default_domain: str) -> grpc.Status:
        # The status travels in trailers, which gRPC caps at 8 KiB: messages and metadata often quote
        # the caller's input, so each part is clipped rather than turning the answer into a transport error.
        metadata = {_clip(k, 64): _clip(v, _MAX_VALUE) for k, v in list(self.metadata.items())[:_MAX_ITEMS]}
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=self.domain or default_domain, metadata=metadata
        )
        details = [info]
        if self.field_violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_clip(f, _MAX_VALUE), description=_clip(d, _MAX_VALUE)
                        )
                        for f, d in self.field_violations[:_MAX_ITEMS]
                    ]
                )
            )
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        status = status_pb2.Status(code=self.code.value[0], message=_clip(self.message, _MAX_MESSAGE))
        for detail in details:
            status.details.add().Pack(detail)
        return rpc_status.to_status(status)


_MAX_MESSAGE, _MAX_VALUE, _MAX_ITEMS = 500, 100, 10


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(ServiceError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {cls.code: cls for cls in ServiceError.__subclasses__()}


def from_rpc_error(err: grpc.RpcError) -> ServiceError:
    """Rebuild the ServiceError a downstream service sent, keeping code, reason and details."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else None) or str(err)
    reason, domain, metadata, violations, retry_after = code.name, "", {}, [], None
    try:
        status = rpc_status.from_call(err) if hasattr(err, "trailing_metadata") else None
    except ValueError:  # details that contradict the call's own status: keep what the call says
        status = None
    for detail in status.details if status else ():
        info, bad, retry = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and reason == code.name:
        reason = "UPSTREAM_UNAVAILABLE"
    error = _BY_CODE.get(code, ServiceError)(
        message, reason=reason, metadata=metadata, field_violations=violations, domain=domain,
        retry_after=retry_after,
    )
    error.code = code  # also the codes with no class of their own (DEADLINE_EXCEEDED, UNIMPLEMENTED...)
    return error


assert code_pb2.NOT_FOUND == grpc.StatusCode.NOT_FOUND.value[0]  # the two enums agree
