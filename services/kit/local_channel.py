"""Calls from one service to another served by this same process, without the network.

The embedded suite serves auth, programs, devices and jobs on one server, and jobs calls devices and
programs several times per job. Over gRPC each such call crosses the client, HTTP/2 on loopback and
the server's machinery: about a millisecond of CPU for a call whose work is often less. A LocalChannel
answers a unary call itself, and keeps to what the wire does so that no service can tell the
difference: the handler the server would run (found in the handlers the components registered),
through the server's own interceptor objects in the server's order, the request and the response
passed as bytes through the method's serializers (the interceptor's tolerant decoder sees the
same bytes), the caller's metadata as invocation metadata, its timeout as the deadline, the call run
in a task of its own with a fresh context (a served call does not see its caller's bound request id
or principal), and a failure raised as the grpc.aio.AioRpcError the wire would give, rich status in
its trailing metadata. Streaming methods go over the real channel: only unary calls are local.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import grpc

from .logging import get_logger
from .outbound import MAX_MESSAGE_BYTES

log = get_logger("local-channel")
# What a served call's peer() says: a caller in this same process. peer_host() keeps "local".
LOCAL_PEER = "local:in-process"


class _CallDetails(NamedTuple):
    """grpc.HandlerCallDetails as the aio server passes it to interceptors and generic handlers."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class GenericOnly:
    """A server as the generated `add_*Servicer_to_server` functions see it: each adds its service's
    generic handler, then registers the same methods, which is left out here. grpc.aio awaits the
    next call of every registered method apart, and for every call it takes it waits on all of those
    again (one asyncio.wait over them all): with the embedded suite's 70-odd methods that was about a
    tenth of the CPU of a cheap call. The generic handlers serve the same methods."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        pass  # served by the service's generic handler, added just before

    def __getattr__(self, name: str) -> Any:  # anything else a component asks of the server
        return getattr(self._server, name)


class LocalHandlers(GenericOnly):
    """The method handlers the components register, kept while passed on to the server (as generic
    ones alone, see GenericOnly).

    Given to `component.register` in place of the server: the generated `add_*Servicer_to_server`
    calls add_generic_rpc_handlers and, on recent gRPC, add_registered_method_handlers."""

    def __init__(self, server: grpc.aio.Server) -> None:
        super().__init__(server)
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)
        super().add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._registered.update({f"/{service}/{name}": handler for name, handler in handlers.items()})

    def find(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        """The handler the server would run, looked up in its order: registered methods, then generic."""
        handler = self._registered.get(details.method)
        generics = iter(self._generic)
        while handler is None and (generic := next(generics, None)) is not None:
            handler = generic.service(details)
        return handler


class LocalContext(grpc.aio.ServicerContext):
    """The servicer context of a local call: what the interceptors and servicers use of the aio one."""

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...], deadline: float | None) -> None:
        self._metadata = metadata
        self._deadline = deadline  # time.monotonic() seconds, or None for no deadline
        self.initial_metadata_sent: tuple | None = None
        self.trailing: tuple = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._aborted = False

    # Metadata and the call's identity.
    def invocation_metadata(self):
        return self._metadata

    def peer(self) -> str:
        return LOCAL_PEER

    def peer_identities(self):
        return None

    def peer_identity_key(self):
        return None

    def auth_context(self):
        return {}

    async def send_initial_metadata(self, initial_metadata) -> None:
        if self.initial_metadata_sent is not None:
            raise grpc.aio.UsageError("Send initial metadata failed: already sent")
        self.initial_metadata_sent = tuple(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata) -> None:
        self.trailing = tuple(trailing_metadata)

    def trailing_metadata(self):
        return self.trailing

    # Status.
    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        if self._aborted:
            raise grpc.aio.UsageError("Abort already called!")
        self._aborted = True
        self._code, self._details = code, details
        if trailing_metadata:
            self.trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    # Time and liveness.
    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancelled(self) -> bool:
        return False  # a cancelled local call's task is cancelled: its code never runs on to ask

    def done(self) -> bool:
        return self._aborted

    def add_done_callback(self, callback) -> None:
        raise NotImplementedError("local calls take no done callbacks; none of the services uses them")

    # Streams: a local call is unary, so neither end of it streams.
    async def read(self):
        raise grpc.aio.UsageError("a unary call has no request stream to read")

    async def write(self, message) -> None:
        raise grpc.aio.UsageError("a unary call answers by returning its response, not by writing")

    def set_compression(self, compression) -> None:
        pass  # nothing goes over a wire to compress

    def disable_next_message_compression(self) -> None:
        pass


def _error(code: grpc.StatusCode, details: str, initial=(), trailing=()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(*initial), grpc.aio.Metadata(*trailing), details, None)


Resolve = Callable[[grpc.HandlerCallDetails], Any]  # async: details -> the intercepted handler or None


class _Served(NamedTuple):
    response: bytes
    initial: tuple
    trailing: tuple


async def _serve(resolve: Resolve, method: str, data: bytes, metadata: tuple, deadline: float | None) -> _Served:
    """One call as the server runs it; raises the AioRpcError the caller would get over the wire."""
    if len(data) > MAX_MESSAGE_BYTES:  # what the channel's and the server's size limits say on the wire
        raise _error(grpc.StatusCode.RESOURCE_EXHAUSTED, f"Sent message larger than max ({len(data)} vs. "
                                                         f"{MAX_MESSAGE_BYTES})")
    context = LocalContext(metadata, deadline)
    try:
        handler = await resolve(_CallDetails(method, metadata))
    except Exception as err:  # an interceptor that fails to wrap: the server's answer too
        log.exception("unexpected error in a local call's interceptors", method=method)
        raise _error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(err)}: {err}") from None
    if handler is None:
        raise _error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    if handler.request_streaming or handler.response_streaming:
        raise _error(grpc.StatusCode.INTERNAL, f"{method} streams: it is not served locally")
    try:
        request = handler.request_deserializer(data) if handler.request_deserializer else data
        response = await handler.unary_unary(request, context)
    except grpc.aio.AbortError:
        raise _error(context.code(), context.details(), context.initial_metadata_sent or (), context.trailing) from None
    except Exception as err:  # the server's answer to a handler that fails past every interceptor
        log.exception("unexpected error in a local call", method=method)
        raise _error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(err)}: {err}") from None
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:  # set_code without abort: the status, no response
        raise _error(code, context.details(), context.initial_metadata_sent or (), context.trailing)
    data = handler.response_serializer(response) if handler.response_serializer else response
    if len(data) > MAX_MESSAGE_BYTES:
        raise _error(grpc.StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max ({len(data)} vs. "
                                                         f"{MAX_MESSAGE_BYTES})")
    return _Served(data, context.initial_metadata_sent or (), context.trailing)


class LocalUnaryUnaryCall:
    """A local call under way: awaited for its response, like grpc.aio.UnaryUnaryCall. The served
    task runs apart from the caller, which waits for it at most until the deadline and cancels it
    when cancelled itself (or at the deadline), without waiting on its clean-up."""

    _running: set[asyncio.Task] = set()  # served tasks the caller stopped waiting for, kept from the GC

    def __init__(self, served: asyncio.Task, deadline: float | None, deserialize: Callable | None) -> None:
        self._served = served
        self._deadline = deadline
        self._deserialize = deserialize
        LocalUnaryUnaryCall._running.add(served)
        served.add_done_callback(LocalUnaryUnaryCall._running.discard)

    async def _outcome(self) -> _Served:
        timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        try:
            done, _ = await asyncio.wait((self._served,), timeout=timeout)
        except asyncio.CancelledError:
            self._served.cancel()
            raise
        if not done:
            self._served.cancel()
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if self._served.cancelled():
            raise _error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        return self._served.result()

    async def _response(self):
        data = (await self._outcome()).response
        return self._deserialize(data) if self._deserialize else data

    def __await__(self):
        return self._response().__await__()

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*(await self._outcome()).initial)

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*(await self._outcome()).trailing)

    async def code(self) -> grpc.StatusCode:
        try:
            await self._outcome()
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    def cancel(self) -> bool:
        return self._served.cancel()

    def cancelled(self) -> bool:
        return self._served.cancelled()

    def done(self) -> bool:
        return self._served.done()


class _LocalUnaryUnary:
    """The multicallable a stub holds for one unary method."""

    def __init__(self, channel: LocalChannel, method: str, serialize: Callable | None,
                 deserialize: Callable | None) -> None:
        self._channel, self._method = channel, method
        self._serialize, self._deserialize = serialize, deserialize

    def __call__(self, request, *, timeout: float | None = None, metadata=None, credentials=None,
                 wait_for_ready=None, compression=None) -> LocalUnaryUnaryCall:
        deadline = None if timeout is None else time.monotonic() + timeout
        data = self._serialize(request) if self._serialize else request
        metadata = tuple((key, value) for key, value in (metadata or ()))
        # A fresh context, as a served call has: the caller's bound request id and principal stay its own.
        served = asyncio.get_running_loop().create_task(
            _serve(self._channel.resolve, self._method, data, metadata, deadline), context=contextvars.Context())
        return LocalUnaryUnaryCall(served, deadline, self._deserialize)


class LocalChannel(grpc.aio.Channel):
    """A channel to this same server: unary calls served in process, streaming ones over `real`."""

    def __init__(self, handlers: LocalHandlers, interceptors: Sequence[grpc.aio.ServerInterceptor],
                 real: grpc.aio.Channel) -> None:
        self._handlers = handlers
        self._interceptors = tuple(interceptors)
        self._real = real

    async def resolve(self, details: grpc.HandlerCallDetails, index: int = 0):
        """The handler as the server's interceptors make it: each one's intercept_service in turn,
        the first outermost, the last's continuation the registered handlers (as grpc.aio does)."""
        if index == len(self._interceptors):
            return self._handlers.find(details)
        return await self._interceptors[index].intercept_service(
            lambda next_details: self.resolve(next_details, index + 1), details)

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _LocalUnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return self._real.unary_stream(method, request_serializer, response_deserializer, _registered_method)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return self._real.stream_unary(method, request_serializer, response_deserializer, _registered_method)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return self._real.stream_stream(method, request_serializer, response_deserializer, _registered_method)

    # The connection is the real channel's, owned and closed by Channels.
    def get_state(self, try_to_connect: bool = False):
        return self._real.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state) -> None:
        await self._real.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._real.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        pass  # the real channel is Channels' to close

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb) -> None:
        pass
