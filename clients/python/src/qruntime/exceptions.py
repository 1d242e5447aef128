"""The exceptions the qruntime client raises, and the one mapping from gRPC errors to them.

Every failed call to a service raises a :class:`RuntimeServiceError`, or the subclass its gRPC status
code selects, carrying what the server said: the status code, the stable ``reason`` of its
``google.rpc.ErrorInfo``, the message, the ``ErrorInfo`` metadata and the ``google.rpc.BadRequest``
field violations. ``str()`` of one reads ``NOT_FOUND (PROGRAM_NOT_FOUND): program 'nope' not found``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "AccountAlreadyExistsError",
    "IBMAccountError",
    "IBMApiError",
    "IBMBackendApiError",
    "IBMBackendApiProtocolError",
    "IBMBackendError",
    "IBMBackendValueError",
    "RuntimeJobMaxTimeoutError",
    "RuntimeJobNotFound",
    "RuntimeProgramNotFound",
    "AccountNotFoundError",
    "AccountsError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "FieldViolation",
    "IBMError",
    "IBMInputValueError",
    "IBMNotAuthorizedError",
    "IBMRuntimeError",
    "InvalidAccountError",
    "NotFoundError",
    "ResourceExhaustedError",
    "RuntimeInvalidStateError",
    "RuntimeJobFailureError",
    "RuntimeJobTimeoutError",
    "RuntimeServiceError",
    "ServiceUnavailableError",
    "from_grpc_error",
]


class IBMError(Exception):
    """Base class of every error the qruntime client raises."""


class IBMRuntimeError(IBMError):
    """An error about the runtime service or one of its jobs."""


class FieldViolation(NamedTuple):
    """One request field the server (or the client, before sending) found at fault."""

    field: str
    """Path of the field, e.g. ``"inputs.circuits"``."""
    description: str
    """What is wrong with it."""


class RuntimeServiceError(IBMRuntimeError):
    """A call to a qruntime service failed; subclasses are chosen by the gRPC status code."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        *,
        domain: str = "",
        request_id: str = "",
    ) -> None:
        self.code: grpc.StatusCode = code
        """The gRPC status code."""
        self.reason: str = reason
        """The stable UPPER_SNAKE reason of the server's ErrorInfo; empty when it sent none."""
        self.message: str = message
        """The server's message, for people."""
        self.metadata: dict[str, str] = dict(metadata or {})
        """The ErrorInfo metadata, e.g. ``{"program_id": "nope"}``."""
        self.field_violations: list[FieldViolation] = list(field_violations)
        """The BadRequest field violations."""
        self.domain: str = domain
        """The ErrorInfo domain, e.g. ``"jobs.qruntime"``."""
        self.request_id: str = request_id
        """The ``x-request-id`` the client sent with the failed call; quote it to the operators."""
        super().__init__(str(self))

    def __str__(self) -> str:
        head = self.code.name if self.reason == "" else f"{self.code.name} ({self.reason})"
        text = f"{head}: {self.message}" if self.message else head
        # Servers often repeat a violation in the message; say each one once.
        extra = [f"{v.field}: {v.description}" for v in self.field_violations]
        extra = [e for e in extra if e not in self.message]
        if extra:
            text += " [" + "; ".join(extra) + "]"
        return text

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Exceptions pickle through their args by default; keep every attribute instead.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[RuntimeServiceError], state: dict[str, object]) -> RuntimeServiceError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, str(error))
    return error


class IBMInputValueError(RuntimeServiceError, ValueError):
    """A request was invalid (INVALID_ARGUMENT), whether the server or the client found it so."""


class IBMNotAuthorizedError(RuntimeServiceError):
    """The API key or token was refused (UNAUTHENTICATED) or lacks a right (PERMISSION_DENIED)."""


class NotFoundError(RuntimeServiceError):
    """The program, job, backend or instance does not exist or is not visible (NOT_FOUND)."""


class AlreadyExistsError(RuntimeServiceError):
    """The resource to create exists already (ALREADY_EXISTS)."""


class FailedPreconditionError(RuntimeServiceError):
    """The resource is not in a state that allows the call, e.g. cancelling an ended job."""


class ResourceExhaustedError(RuntimeServiceError):
    """A quota or rate limit was reached (RESOURCE_EXHAUSTED)."""


class ServiceUnavailableError(RuntimeServiceError):
    """The service could not be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED)."""


_CLASS_BY_CODE: dict[grpc.StatusCode, type[RuntimeServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: IBMInputValueError,
    grpc.StatusCode.UNAUTHENTICATED: IBMNotAuthorizedError,
    grpc.StatusCode.PERMISSION_DENIED: IBMNotAuthorizedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServiceUnavailableError,
}


def from_grpc_error(error: grpc.RpcError, *, request_id: str = "") -> RuntimeServiceError:
    """Build the exception that stands for a failed call, with the server's rich error details.

    Works for the errors of sync and ``grpc.aio`` calls. Details the server did not send are left
    empty; a status that cannot be parsed is ignored rather than hiding the original error.
    """
    code_of = getattr(error, "code", None)
    code = code_of() if callable(code_of) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details_of = getattr(error, "details", None)
    message = (details_of() if callable(details_of) else None) or ""
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError, TypeError):
        # A status whose code or message disagrees with the call's, or an error that is no call.
        status = None
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
    cls = _CLASS_BY_CODE.get(code, RuntimeServiceError)
    return cls(code, reason, message, metadata, violations, domain=domain, request_id=request_id)


class RuntimeJobFailureError(IBMRuntimeError):
    """A job ended in ERROR; ``reason`` is the JobReason name without its prefix, e.g. ``PROGRAM_ERROR``."""

    def __init__(self, job_id: str, reason: str, message: str) -> None:
        self.job_id: str = job_id
        """The job that failed."""
        self.reason: str = reason
        """Why it failed, e.g. ``"PROGRAM_ERROR"`` or ``"TIME_LIMIT_EXCEEDED"``."""
        self.message: str = message
        """The reason in words."""
        super().__init__(job_id, reason, message)

    def __str__(self) -> str:
        return f"job {self.job_id!r} failed ({self.reason}): {self.message}"


class RuntimeInvalidStateError(IBMRuntimeError):
    """The job is not in a state that allows the request, e.g. the result of a cancelled job."""


class RuntimeJobTimeoutError(IBMRuntimeError, TimeoutError):
    """Waiting for a job to reach a final state took longer than the timeout given."""


class AccountsError(IBMError):
    """A problem with the saved accounts or the account given."""


class InvalidAccountError(AccountsError, ValueError):
    """The account's fields are invalid, e.g. an empty token or an unknown auth type."""


class AccountNotFoundError(AccountsError):
    """No account was given and none is saved under the name asked for."""


class AccountAlreadyExistsError(AccountsError):
    """An account is saved under the name already and ``overwrite=True`` was not given."""


def _invalid_argument(field: str, description: str) -> IBMInputValueError:
    """The error for a request the client refuses before sending, shaped like the server's."""
    return IBMInputValueError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "",
        f"{field}: {description}",
        field_violations=[FieldViolation(field, description)],
    )


# The names qiskit-ibm-runtime's users catch, for code written against it.
IBMAccountError = AccountsError
RuntimeJobNotFound = NotFoundError
RuntimeProgramNotFound = NotFoundError


class IBMBackendError(IBMError):
    """A backend could not be used as asked."""


class IBMBackendValueError(IBMBackendError, ValueError):
    """A value given for a backend is invalid."""


class IBMBackendApiError(IBMBackendError):
    """The service refused a backend request."""


class IBMBackendApiProtocolError(IBMBackendError):
    """The service answered a backend request with something unexpected."""


class IBMApiError(IBMError):
    """The service refused a request."""


class RuntimeJobMaxTimeoutError(IBMRuntimeError):
    """A job ran past its time limit (it ends ERROR TIME_LIMIT_EXCEEDED)."""
