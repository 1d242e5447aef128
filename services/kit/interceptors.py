"""The server interceptor: request ids, the one error mapping, decoding, audit, bearer-token auth
and storable text, in one coroutine around every call, unary or streaming.

Its steps, outermost first: request context (the request id, bound to every log line and returned
to the caller; one "rpc" log line per call), errors (ServiceError -> rich status, anything else ->
a logged INTERNAL), decoding (a request that is not its method's message), audit (mutating and
refused calls), auth (bearer token, audience, service calls, refused internal methods), text (NUL
characters). They were six chained interceptors, each building a wrapped handler and an async
context manager per call; what depends only on the method (its domain, audience, whether it is
open, public, refused or audited, and the wrapped handler itself) is now worked out once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import random
import re
import time
from collections.abc import Collection, Mapping

import grpc
import structlog
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .audit import (
    AUDITED_ACTIONS,
    DENIED,
    DENIED_CODES,
    FAILURE,
    PENDING_SUCCESS,
    SUCCESS,
    AuditSink,
    PendingSuccess,
    event_of,
)
from .auth import SERVICE_CALLS, Principal, audience_of, reset_principal, set_principal
from .decoding import Undecodable, passing_encoded, tolerant
from .errors import FieldViolation, Internal, InvalidArgument, PermissionDenied, ServiceError, Unauthenticated
from .tokens import TokenVerifier

REQUEST_ID_KEY = "x-request-id"
# A caller's request id is kept only if it looks like one; it goes into every log line and is stored.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Always reachable without a token: probes and tooling.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

log = structlog.get_logger(component="server")


def current_request_id() -> str:
    """The request id of the call being served, to pass on to the services it calls."""
    return structlog.contextvars.get_contextvars().get("request_id", "")


def describe_call(**fields) -> None:
    """Fields for the "rpc" line that ends the call being served, and for its later lines: what the call
    did (the job a CreateJob made), where a line of its own would cost as much again (~45 us in a running
    suite). Each call is served in a context of its own, so they go no further."""
    structlog.contextvars.bind_contextvars(**fields)


@dataclasses.dataclass(frozen=True, slots=True)
class _Method:
    """What the interceptor needs to know of a method, worked out on its first call."""

    name: str
    domain: str  # its errors' ErrorInfo domain ("jobs.qruntime")
    open: bool  # probes and tooling: no token, no audit, no log line
    public: bool  # no token needed
    refused: bool  # internal to the suite, not served on this port
    audience: str  # what a token must name to call it
    audited: bool  # recorded when it succeeds too, not only when refused


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Every call's per-call steps (see the module's doc), in one coroutine.

    `domains` maps full proto service names to the ErrorInfo domain of the service that answers
    them (several services may share one server). A token must name the called service as its
    audience; a service's token allows only that service's documented calls (SERVICE_CALLS).
    `refused_methods` are not served on this port at all: the internal ones, where this server is
    the front door. Every call that creates, changes or deletes something (AUDITED_ACTIONS) and every
    refused one is recorded as an audit event before it is answered; the audit step sits outside
    the auth step, so that calls refused for a missing or bad token are recorded too."""

    def __init__(self, *, domains: Mapping[str, str], audit: AuditSink, verifier: TokenVerifier,
                 public_methods: Collection[str], refused_methods: Collection[str] = ()) -> None:
        self._domains = dict(domains)  # full proto service name -> domain
        self._audit = audit
        self._verifier = verifier
        self._public = frozenset(public_methods)
        self._refused = frozenset(refused_methods)
        # method -> (the handler the server found, that handler wrapped in the steps)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (handler, self._wrap(handler, self._method(method)))
        return known[1]

    def _method(self, method: str) -> _Method:
        return _Method(
            name=method, domain=self._domains.get(method.lstrip("/").partition("/")[0], "qruntime"),
            open=method.startswith(OPEN_PREFIXES), public=method in self._public, refused=method in self._refused,
            audience=audience_of(method), audited=method in AUDITED_ACTIONS,
        )

    def _wrap(self, handler: grpc.RpcMethodHandler, method: _Method) -> grpc.RpcMethodHandler:
        """A copy of handler whose behaviour runs inside the steps. Its unary request decoder hands a
        failure on as an Undecodable value (refused as INVALID_ARGUMENT, not gRPC's UNKNOWN), and a
        streamed response that is Encoded is sent as it is."""
        one_request = not handler.request_streaming
        if one_request and handler.request_deserializer is not None:
            handler = handler._replace(request_deserializer=tolerant(handler.request_deserializer))
        if handler.response_streaming and handler.response_serializer is not None:
            handler = handler._replace(response_serializer=passing_encoded(handler.response_serializer))
        around = self._around

        def unary(behavior):
            async def call(request_or_iterator, context):
                async with around(method, context, request_or_iterator if one_request else None):
                    return await behavior(request_or_iterator, context)

            return call

        def streaming(behavior):
            if not inspect.isasyncgenfunction(behavior):
                return unary(behavior)  # a coroutine that sends its responses with context.write (Health.Watch)

            async def call(request_or_iterator, context):
                async with around(method, context, request_or_iterator if one_request else None):
                    async for response in behavior(request_or_iterator, context):
                        yield response

            return call

        for attr, wrapper in (("unary_unary", unary), ("stream_unary", unary), ("unary_stream", streaming),
                              ("stream_stream", streaming)):
            behavior = getattr(handler, attr)
            if behavior is not None:
                return handler._replace(**{attr: wrapper(behavior)})
        return handler

    @contextlib.asynccontextmanager
    async def _around(self, method: _Method, context: grpc.aio.ServicerContext, request: Message | None):
        """The steps around one call; request is the message, or None when the client streams them."""
        # Request context: the caller's request id or a new one, on every log line and back to the caller.
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        request_id = metadata.get(REQUEST_ID_KEY, "")
        if not _REQUEST_ID.fullmatch(request_id):
            # 32 random hex digits, as uuid4().hex gave, without its system call: a request id is no
            # secret (a caller may choose its own), only unique.
            request_id = f"{random.getrandbits(128):032x}"
        bound = structlog.contextvars.bind_contextvars(request_id=request_id, method=method.name)
        started = time.perf_counter()
        try:
            # The request id goes back in the trailing metadata: it travels with the status, in the write
            # that ends the call, where initial metadata of our own would be a write of its own (0.18 ms of
            # a call's latency and a sixth of its CPU here; grpc.aio sends a response's initial metadata
            # empty unless sent apart). A failed call's status carries it the same way.
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            try:  # errors: the one place domain errors become gRPC statuses
                if isinstance(request, Undecodable):  # before anything reads the request
                    raise InvalidArgument(
                        f"the request is not a valid {method.name.rsplit('/', 1)[-1]} request message: "
                        f"{str(request.error).rsplit(': ', 1)[-1]}",
                        reason="UNDECODABLE_REQUEST",
                    )
                principal, outcome, code, reason, pending = None, SUCCESS, "OK", "", None
                try:  # audit: what the call was, whoever turns out to have made it
                    principal = await self._principal(method, metadata)
                    if principal is not None and principal.is_service and method.name not in SERVICE_CALLS.get(
                            principal.subject, ()):
                        raise PermissionDenied(
                            f"the {principal.subject} service may not call {method.name}",
                            reason="SERVICE_CALL_NOT_ALLOWED", metadata={"service": principal.subject},
                        )
                    reset = set_principal(principal)
                    if method.audited:  # its handler may store its success event itself (audit.pending_success)
                        pending = PendingSuccess(functools.partial(event_of, method.name, principal, request, SUCCESS,
                                                                   "OK", ""))
                    reset_pending = PENDING_SUCCESS.set(pending)
                    try:
                        violations = nul_violations(request) if isinstance(request, Message) else []
                        if violations:  # no stored text needs one, and PostgreSQL cannot store one
                            raise InvalidArgument("text fields must not hold NUL characters", reason="NUL_CHARACTER",
                                                  field_violations=violations)
                        yield
                    finally:
                        PENDING_SUCCESS.reset(reset_pending)
                        reset_principal(reset)
                except ServiceError as err:
                    outcome = DENIED if err.code in DENIED_CODES else FAILURE
                    code, reason = err.code.name, err.reason
                    raise
                except BaseException as err:
                    if not isinstance(err, grpc.aio.AbortError):
                        outcome, code, reason = FAILURE, type(err).__name__, ""
                    raise
                finally:
                    stored_by_handler = outcome == SUCCESS and pending is not None and pending.stored
                    if not method.open and (outcome == DENIED or method.audited) and not stored_by_handler:
                        written = self._audit.add(event_of(method.name, principal, request, outcome, code, reason))
                        # Answered only once recorded, but not held up for long: with auth unreachable the
                        # event stays queued, and is written when auth is back.
                        with contextlib.suppress(TimeoutError):  # (timing out cancels the future, not the write)
                            async with asyncio.timeout(self._audit.WAIT_SECONDS):
                                await written
            except ServiceError as err:
                await context.abort_with_status(_with_request_id(err.to_status(method.domain), request_id))
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error")
                err = Internal("internal error; the service logged the details", reason="INTERNAL")
                await context.abort_with_status(_with_request_id(err.to_status(method.domain), request_id))
        finally:
            if not method.open:
                code = context.code()
                log.info("rpc", code=code.name if code else "OK", ms=round((time.perf_counter() - started) * 1000, 2))
            structlog.contextvars.reset_contextvars(**bound)

    async def _principal(self, method: _Method, metadata: Mapping[str, str]) -> Principal | None:
        """The caller the bearer token proves, bound to the log lines; None for a method that needs
        no token."""
        if method.refused:
            raise PermissionDenied("this method is internal to the suite and not served here",
                                   reason="INTERNAL_METHOD", metadata={"method": method.name})
        if method.public or method.open:
            return None
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise Unauthenticated(
                "this call needs 'authorization: Bearer <token>' metadata; exchange your API key "
                "for a token with AuthService.CreateToken",
                reason="TOKEN_MISSING",
            )
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'", reason="TOKEN_INVALID")
        principal = await self._verifier.verify(token.strip(), method.audience)
        structlog.contextvars.bind_contextvars(subject=principal.subject)
        return principal


def _with_request_id(status: grpc.Status, request_id: str) -> grpc.Status:
    """The status with the request id in its trailing metadata (abort replaces what was set before)."""
    return status._replace(trailing_metadata=(*status.trailing_metadata, (REQUEST_ID_KEY, request_id)))


def nul_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """The text fields of message, at any depth, that hold a NUL character. Fields of numbers, bytes and
    enums are not walked (a PUB's parameter values may be thousands of numbers)."""
    violations: list[FieldViolation] = []
    for field, value in message.ListFields():
        if field.type not in _HOLDS_TEXT:
            continue
        path = prefix + field.name
        if _is_map(field):
            for key, item in value.items():
                _check_text(violations, f"{path}[{key!r}]", key, item)
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_text(violations, f"{path}[{index}]", None, item)
        else:
            _check_text(violations, path, None, value)
    return violations


_HOLDS_TEXT = frozenset({FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE})  # a map is a message


def _check_text(violations: list[FieldViolation], where: str, key, item) -> None:
    if isinstance(key, str) and "\x00" in key or isinstance(item, str) and "\x00" in item:
        violations.append((where, "must not hold NUL characters"))
    elif isinstance(item, Message):
        violations += nul_violations(item, where + ".")


@functools.cache
def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry
