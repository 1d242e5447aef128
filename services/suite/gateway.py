"""The front door: one address for clients, routing each call by its proto package to a service.

Used when the services run as separate processes or containers. It forwards the raw bytes of
requests and responses (nothing is decoded or re-checked here: every service checks its own
calls) with the caller's metadata, deadline and the callee's full status, rich details included.
Its own health service answers for the front door itself. The suite's internal methods
(INTERNAL_METHODS: exchanging a service key for a token, revocations) are never forwarded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2_grpc

# Importing the generated modules registers every qruntime service in the descriptor pool.
from qruntime.admin.v1 import admin_service_pb2  # noqa: F401
from qruntime.auth.v1 import auth_service_pb2  # noqa: F401
from qruntime.devices.v1 import devices_service_pb2  # noqa: F401
from qruntime.jobs.v1 import jobs_service_pb2  # noqa: F401
from qruntime.programs.v1 import programs_service_pb2  # noqa: F401

from qruntime_kit.auth import FORWARDED_FOR_KEY, INTERNAL_METHODS, peer_host
from qruntime_kit.heap import freeze_startup_heap
from qruntime_kit.logging import configure_logging, get_logger
from qruntime_kit.outbound import CHANNEL_OPTIONS
from qruntime_kit.server import until_signalled
from qruntime_kit.settings import ServerSettings, setting
from qruntime_kit.tls import add_port, aio_channel, server_credentials

from .rest import HttpFrontDoor, HttpSettings

log = get_logger("gateway")
_HOP_BY_HOP = {"te", "content-type", "grpc-timeout", "user-agent", "grpc-accept-encoding", "grpc-encoding"}


@dataclasses.dataclass(frozen=True)
class GatewaySettings(ServerSettings, HttpSettings):
    """Settings of the front door: where each service listens, and its HTTP/JSON port."""

    programs_url: str = setting("127.0.0.1:8445", "host:port of the programs service")
    jobs_url: str = setting("127.0.0.1:8446", "host:port of the jobs service")
    devices_url: str = setting("127.0.0.1:8447", "host:port of the devices service")

    def routes(self) -> dict[str, str]:
        return {
            "qruntime.auth.v1": self.auth_url or "127.0.0.1:8444",
            "qruntime.admin.v1": self.auth_url or "127.0.0.1:8444",  # served by the auth service
            "qruntime.programs.v1": self.programs_url,
            "qruntime.jobs.v1": self.jobs_url,
            "qruntime.devices.v1": self.devices_url,
        }


class Router(grpc.GenericRpcHandler):
    """Finds the service of a method path and forwards the call there, bytes unchanged."""

    def __init__(self, routes: Mapping[str, str], credentials: grpc.ChannelCredentials | None = None) -> None:
        self._routes = dict(routes)
        self._channels = {url: aio_channel(url, credentials, CHANNEL_OPTIONS) for url in set(routes.values())}
        self._pool = descriptor_pool.Default()
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}  # grpc.aio asks for every call

    def service(self, handler_call_details):
        path = handler_call_details.method  # "/qruntime.jobs.v1.JobsService/CreateJob"
        handler = self._handlers.get(path)
        if handler is None and (handler := self._handler(path)) is not None:
            self._handlers[path] = handler  # a method of ours: a bounded set (unknown paths are not kept)
        return handler

    def _handler(self, path: str) -> grpc.RpcMethodHandler | None:
        """The forwarding handler of a method path; None for UNIMPLEMENTED."""
        service_name, _, method_name = path.lstrip("/").partition("/")
        url = self._routes.get(service_name.rpartition(".")[0])
        if url is None or path in INTERNAL_METHODS:
            return None  # UNIMPLEMENTED: not a qruntime service, or one only the services call
        try:
            method = self._pool.FindServiceByName(service_name).FindMethodByName(method_name)
        except KeyError:
            return None
        if method is None or method.client_streaming:
            return None  # no qruntime RPC takes a stream of requests
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._streaming(url, path))
        callable_ = self._channels[url].unary_unary(path)

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            call = callable_(request, metadata=_forwarded(context), timeout=context.time_remaining())
            try:
                response = await call
            except grpc.aio.AioRpcError as err:
                # The callee's status goes back as it is: code, message and the rich details that
                # travel in its trailing metadata (grpc-status-details-bin), with its request id.
                await _send_initial(context, err.initial_metadata())
                await context.abort(err.code(), err.details() or "", trailing_metadata=tuple(err.trailing_metadata()))
            await _send_initial(context, await call.initial_metadata())
            context.set_trailing_metadata(tuple(await call.trailing_metadata()))
            return response

        return grpc.unary_unary_rpc_method_handler(forward)

    def _streaming(self, url: str, path: str):
        """Forwarding of a server-streaming method (JobsService.WatchJob): each response as it comes."""
        callable_ = self._channels[url].unary_stream(path)

        async def forward(request: bytes, context: grpc.aio.ServicerContext):
            call = callable_(request, metadata=_forwarded(context), timeout=context.time_remaining())
            try:
                await _send_initial(context, await call.initial_metadata())
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as err:
                await context.abort(err.code(), err.details() or "", trailing_metadata=tuple(err.trailing_metadata()))
            finally:
                call.cancel()  # the caller went away: so does the callee's stream
            context.set_trailing_metadata(tuple(await call.trailing_metadata()))

        return forward

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()))


async def _send_initial(context: grpc.aio.ServicerContext, metadata) -> None:
    """The callee's initial metadata passed on, if it sent any: the suite's services send none (their
    request id goes in the trailing metadata), and an empty one goes with the response for free, where
    sending it apart is a write of its own."""
    if metadata:
        await context.send_initial_metadata(tuple(metadata))


def _forwarded(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata, and its address as x-forwarded-for (for the auth service's per-peer
    limits), replacing whatever the caller said it was."""
    metadata = context.invocation_metadata() or ()
    kept = tuple((k, v) for k, v in metadata
                 if k not in _HOP_BY_HOP and k != FORWARDED_FOR_KEY and not k.startswith(":"))
    return (*kept, (FORWARDED_FOR_KEY, peer_host(context.peer() or "")))


@dataclasses.dataclass
class Gateway:
    """A running front door."""

    server: grpc.aio.Server
    port: int
    router: Router
    health: health.aio.HealthServicer
    http: HttpFrontDoor | None = None

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, stop taking calls, let those in flight finish, then close the channels."""
        await self.health.enter_graceful_shutdown()
        if self.http is not None:
            await self.http.stop()
        await self.server.stop(grace)
        await self.router.close()


async def start_gateway(settings: GatewaySettings) -> Gateway:
    """Start the front door and return it once it serves."""
    router = Router(settings.routes(), settings.tls_channel_credentials())
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers([router])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Users call the front door: it never asks them for certificates, whatever tls_verify_clients says.
    port = add_port(server, f"{settings.host}:{settings.port}",
                    server_credentials(settings.tls_cert_file, settings.tls_key_file))
    http = None
    if settings.http_port >= 0:  # the HTTP/JSON API calls this gateway's own gRPC port; up before it serves
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
        http = HttpFrontDoor(settings.host, settings.http_port, f"{host}:{port}", settings)
        await http.start()
    await server.start()
    log.info("gateway serving", address=f"{settings.host}:{port}", routes=settings.routes())
    return Gateway(server, port, router, health_servicer, http)


async def serve_gateway(settings: GatewaySettings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    gateway = await start_gateway(settings)
    freeze_startup_heap()
    await until_signalled()
    log.info("stopping", grace_seconds=settings.grace_seconds)
    await gateway.stop(settings.grace_seconds)


def run_gateway(settings: GatewaySettings) -> None:
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve_gateway(settings))
