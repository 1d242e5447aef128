"""Server interceptors: request ids, the one error mapping, bearer-token auth and storable text.

Each wraps the method handler's behaviour in an async context that runs around every call, unary
or streaming. Order (outermost first): RequestContext, Errors, Audit, Auth, Text.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping

import grpc
import structlog
from google.protobuf.message import Message

from .audit import (
    AUDITED_ACTIONS,
    DENIED,
    DENIED_CODES,
    FAILURE,
    SUCCESS,
    AuditSink,
    audited_call,
    event_of,
    note_principal,
)
from .auth import SERVICE_CALLS, audience_of, reset_principal, set_principal
from .errors import FieldViolation, Internal, InvalidArgument, PermissionDenied, ServiceError, Unauthenticated
from .tokens import TokenVerifier

REQUEST_ID_KEY = "x-request-id"
# A caller's request id is kept only if it looks like one; it goes into every log line and is stored.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Always reachable without a token: probes and tooling.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

log = structlog.get_logger(component="server")

# around(details, context, request): request is the message, or None when the client streams them.
Around = Callable[
    [grpc.HandlerCallDetails, grpc.aio.ServicerContext, Message | None], contextlib.AbstractAsyncContextManager
]


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    return {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}


def _wrap(handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails, around: Around) -> grpc.RpcMethodHandler:
    """A copy of handler whose behaviour runs inside around(details, context, request)."""
    if handler is None:
        return None
    one_request = not handler.request_streaming

    def unary(behavior):
        async def call(request_or_iterator, context):
            async with around(details, context, request_or_iterator if one_request else None):
                return await behavior(request_or_iterator, context)

        return call

    def streaming(behavior):
        if not inspect.isasyncgenfunction(behavior):
            return unary(behavior)  # a coroutine that sends its responses with context.write (Health.Watch)

        async def call(request_or_iterator, context):
            async with around(details, context, request_or_iterator if one_request else None):
                async for response in behavior(request_or_iterator, context):
                    yield response

        return call

    kinds = {
        "unary_unary": (unary, grpc.unary_unary_rpc_method_handler),
        "stream_unary": (unary, grpc.stream_unary_rpc_method_handler),
        "unary_stream": (streaming, grpc.unary_stream_rpc_method_handler),
        "stream_stream": (streaming, grpc.stream_stream_rpc_method_handler),
    }
    for attr, (wrapper, make) in kinds.items():
        behavior = getattr(handler, attr)
        if behavior is not None:
            return make(
                wrapper(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class _Around(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        return _wrap(handler, handler_call_details, self.around)

    def around(self, details, context, request) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError


class RequestContextInterceptor(_Around):
    """Binds request_id (the caller's x-request-id, or a new one) and method to every log line,
    returns the id to the caller, and logs one line per call."""

    @contextlib.asynccontextmanager
    async def around(self, details, context, request) -> AsyncIterator[None]:
        request_id = _metadata(details).get(REQUEST_ID_KEY, "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id, method=details.method)
        started = time.perf_counter()
        try:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            yield
        finally:
            if not details.method.startswith(OPEN_PREFIXES):
                code = context.code() if hasattr(context, "code") else None
                log.info("rpc", code=getattr(code, "name", "OK") if code else "OK",
                         ms=round((time.perf_counter() - started) * 1000, 2))
            structlog.contextvars.reset_contextvars(**tokens)


def current_request_id() -> str:
    """The request id of the call being served, to pass on to the services it calls."""
    return structlog.contextvars.get_contextvars().get("request_id", "")


class ErrorInterceptor(_Around):
    """The one place domain errors become gRPC statuses; anything else becomes a logged INTERNAL.

    The ErrorInfo domain names the service that answered ("jobs.qruntime"), also when several
    services share one server."""

    def __init__(self, domains: Mapping[str, str]) -> None:
        self._domains = dict(domains)  # full proto service name -> domain

    @contextlib.asynccontextmanager
    async def around(self, details, context, request) -> AsyncIterator[None]:
        domain = self._domains.get(details.method.lstrip("/").partition("/")[0], "qruntime")
        try:
            yield
        except ServiceError as err:
            await context.abort_with_status(err.to_status(domain))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error")
            err = Internal("internal error; the service logged the details", reason="INTERNAL")
            await context.abort_with_status(err.to_status(domain))


class AuthInterceptor(_Around):
    """Verifies the bearer token of every call but the open ones and sets the current principal.

    A token must name the called service as its audience; a service's token allows only that
    service's documented calls (SERVICE_CALLS). `refused_methods` are not served on this port at
    all: the internal ones, where this server is the front door."""

    def __init__(
        self, verifier: TokenVerifier, public_methods: Collection[str], refused_methods: Collection[str] = ()
    ) -> None:
        self._verifier = verifier
        self._public = frozenset(public_methods)
        self._refused = frozenset(refused_methods)

    @contextlib.asynccontextmanager
    async def around(self, details, context, request) -> AsyncIterator[None]:
        principal = None
        if details.method in self._refused:
            raise PermissionDenied("this method is internal to the suite and not served here",
                                   reason="INTERNAL_METHOD", metadata={"method": details.method})
        if not (details.method in self._public or details.method.startswith(OPEN_PREFIXES)):
            header = _metadata(details).get("authorization", "")
            scheme, _, token = header.partition(" ")
            if not header:
                raise Unauthenticated(
                    "this call needs 'authorization: Bearer <token>' metadata; exchange your API key "
                    "for a token with AuthService.CreateToken",
                    reason="TOKEN_MISSING",
                )
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("the authorization metadata must be 'Bearer <token>'", reason="TOKEN_INVALID")
            principal = await self._verifier.verify(token.strip(), audience_of(details.method))
            structlog.contextvars.bind_contextvars(subject=principal.subject)
            note_principal(principal)
            if principal.is_service and details.method not in SERVICE_CALLS.get(principal.subject, ()):
                raise PermissionDenied(
                    f"the {principal.subject} service may not call {details.method}",
                    reason="SERVICE_CALL_NOT_ALLOWED", metadata={"service": principal.subject},
                )
        reset = set_principal(principal)
        try:
            yield
        finally:
            reset_principal(reset)


class AuditInterceptor(_Around):
    """Records every call that creates, changes or deletes something (AUDITED_ACTIONS) and every
    refused one as an audit event. It sits outside the auth interceptor, so that calls refused for
    a missing or bad token are recorded too."""

    def __init__(self, sink: AuditSink) -> None:
        self._sink = sink

    @contextlib.asynccontextmanager
    async def around(self, details, context, request) -> AsyncIterator[None]:
        method = details.method
        if method.startswith(OPEN_PREFIXES):
            yield
            return
        outcome, code, reason = SUCCESS, "OK", ""
        with audited_call() as call:
            try:
                yield
            except ServiceError as err:
                outcome = DENIED if err.code in DENIED_CODES else FAILURE
                code, reason = err.code.name, err.reason
                raise
            except BaseException as err:
                if not isinstance(err, grpc.aio.AbortError):
                    outcome, code, reason = FAILURE, type(err).__name__, ""
                raise
            finally:
                if outcome == DENIED or method in AUDITED_ACTIONS:
                    written = self._sink.add(event_of(method, call, request, outcome, code, reason))
                    # Answered only once recorded, but not held up for long: with auth unreachable the
                    # event stays queued, and is written when auth is back.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(written), self._sink.WAIT_SECONDS)


class TextInterceptor(_Around):
    """Refuses a request with a NUL character in any text field, as INVALID_ARGUMENT.

    No id, name, JSON document or source needs one, and PostgreSQL cannot store one: without this
    check such a value fails deep in a store as a server error instead of the caller's."""

    @contextlib.asynccontextmanager
    async def around(self, details, context, request) -> AsyncIterator[None]:
        violations = nul_violations(request) if isinstance(request, Message) else []
        if violations:
            raise InvalidArgument(
                "text fields must not hold NUL characters", reason="NUL_CHARACTER", field_violations=violations
            )
        yield


def nul_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """The text fields of message, at any depth, that hold a NUL character."""
    violations: list[FieldViolation] = []
    for field, value in message.ListFields():
        path = prefix + field.name
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            items = [(f"{path}[{key!r}]", key, item) for key, item in value.items()]
        elif field.is_repeated:
            items = [(f"{path}[{index}]", None, item) for index, item in enumerate(value)]
        else:
            items = [(path, None, value)]
        for where, key, item in items:
            if isinstance(key, str) and "\x00" in key or isinstance(item, str) and "\x00" in item:
                violations.append((where, "must not hold NUL characters"))
            elif isinstance(item, Message):
                violations += nul_violations(item, where + ".")
    return violations
