"""Serve components: one gRPC server with health, reflection, interceptors and graceful shutdown.

A component is one service's servicers plus its start/stop hooks. A standalone service serves one
component; the embedded suite serves all four on one port. Either way calls between services go
over gRPC to the configured addresses, through the same checks; a unary call to this same server is
served in process by a LocalChannel, through the very interceptors and handlers the port runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Sequence
from typing import Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from qruntime.admin.v1 import admin_pb2, admin_service_pb2, admin_service_pb2_grpc
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from .audit import AuditEvent, AuditSink
from .auth import INTERNAL_METHODS
from .heap import freeze_startup_heap
from .interceptors import CallInterceptor
from .local_channel import GenericOnly, LocalChannel, LocalHandlers
from .logging import configure_logging, get_logger
from .outbound import CHANNEL_OPTIONS, Channels, Credentials, call, delegate_over_grpc, exchange_over_grpc
from .settings import ServerSettings
from .tls import add_port
from .tokens import TokenVerifier

log = get_logger("server")


@dataclasses.dataclass
class Runtime:
    """What a started component may use: where it listens, and how to reach the other services."""

    settings: ServerSettings
    address: str
    channels: Channels
    credentials: Credentials
    audit: AuditSink | None = None  # the audit trail's batches, written to the auth service
    local: LocalChannel | None = None  # this same server's unary calls, in process

    def channel_to(self, url: str) -> grpc.aio.Channel:
        """A channel to url, or to this same server when url is empty (the embedded suite): there,
        unary calls skip the loopback's HTTP/2 and the server's machinery but not its checks."""
        if url:
            return self.channels.get(url)
        return self.local or self.channels.get(self.address)


class Component(Protocol):
    """One service as the kit serves it."""

    name: str  # short name; its errors' ErrorInfo domain is "<name>.qruntime"
    service_names: tuple[str, ...]  # full proto service names, for health and reflection
    public_methods: frozenset[str]  # "/pkg.Service/Method" paths that need no token

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self, runtime: Runtime) -> None: ...

    async def stop(self) -> None:
        """Give back what start() took; also called after a start() that failed part way."""

    # Optional, the auth component's, used in process by the components served with it (on a front
    # door the internal RPCs are not served): `async def exchange_service_key(key) -> (token, expiry)`,
    # `async def delegate(key, user token) -> (token, expiry)`,
    # `async def revocations_since(since) -> [(subject, revoke time)]` and
    # `async def record_audit_events(events)`.
    # Optional: `async def drain(self) -> None`, called at shutdown while the server still answers
    # calls, to stop work the component started itself (the jobs executor) so that it does not
    # fail on peers that stop answering: in the embedded suite they share this server's port.


@dataclasses.dataclass
class Suite:
    """A running server and what it serves."""

    server: grpc.aio.Server
    port: int
    components: Sequence[Component]
    health: health.aio.HealthServicer
    runtime: Runtime

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, drain the components' own work, stop taking calls, let in-flight ones
        finish, then stop the components."""
        await self.health.enter_graceful_shutdown()
        for component in reversed(self.components):
            drain = getattr(component, "drain", None)
            if drain is not None:
                try:
                    await drain()
                except Exception:
                    log.exception("component did not drain cleanly", component=component.name)
        await self.server.stop(self.runtime.settings.grace_seconds if grace is None else grace)
        if self.runtime.audit is not None:
            await self.runtime.audit.close()  # while auth (here or remote) still takes them
        await _stop_components(self.components, self.runtime.channels)


async def _stop_components(components: Sequence[Component], channels: Channels) -> None:
    """Stop the components, last started first; one that fails is logged and the others still stop."""
    for component in reversed(components):
        try:
            await component.stop()
        except Exception:
            log.exception("component did not stop cleanly", component=component.name)
    await channels.close()


_OUTCOMES = {"success": admin_pb2.AUDIT_OUTCOME_SUCCESS, "denied": admin_pb2.AUDIT_OUTCOME_DENIED,
             "failure": admin_pb2.AUDIT_OUTCOME_FAILURE}


def audit_message(event: AuditEvent) -> admin_pb2.AuditEvent:
    message = admin_pb2.AuditEvent(
        account_id=event.account_id, subject=event.subject, instance=event.instance, action=event.action,
        method=event.method, outcome=_OUTCOMES[event.outcome], code=event.code, reason=event.reason,
        request_id=event.request_id, target=event.target)
    message.time.FromNanoseconds(int(event.time * 1e9))
    return message


async def start_server(components: Sequence[Component], settings: ServerSettings, *, front_door: bool = False) -> Suite:
    """Build, bind and start the server, then start the components; returns once it serves.

    A front door (the embedded suite's port, which clients call) never serves the suite's internal
    methods (INTERNAL_METHODS, such as exchanging a service key for a token)."""
    channels = Channels(settings.tls_channel_credentials())
    auth_channel = lambda: channels.get(settings.auth_url or address)  # noqa: E731 - address bound below

    async def fetch_keys():
        stub = auth_service_pb2_grpc.AuthServiceStub(auth_channel())
        response = await call(stub.ListSigningKeys, auth_service_pb2.ListSigningKeysRequest(), timeout=10)
        return [(k.key_id, k.public_key_pem) for k in response.signing_keys]

    local_auth = next((c for c in components if hasattr(c, "exchange_service_key")), None)
    exchange = local_auth.exchange_service_key if local_auth else exchange_over_grpc(auth_channel)
    delegate = local_auth.delegate if local_auth else delegate_over_grpc(auth_channel)
    credentials = Credentials(exchange, settings.resolved_service_key(), delegate)

    # Auth serves these two to the suite's services alone: each signs in with its own service key.
    async def fetch_revocations(since: float):
        stub = auth_service_pb2_grpc.AuthServiceStub(auth_channel())
        request = auth_service_pb2.ListRevocationsRequest(since=Timestamp(seconds=int(since)))
        response = await call(stub.ListRevocations, request, metadata=await credentials.metadata(), timeout=5)
        return [(r.subject, r.revoke_time.ToNanoseconds() / 1e9) for r in response.revocations]

    async def record_audit_events(events):
        stub = admin_service_pb2_grpc.AdminServiceStub(auth_channel())
        request = admin_service_pb2.RecordAuditEventsRequest(events=[audit_message(e) for e in events])
        await call(stub.RecordAuditEvents, request, metadata=await credentials.metadata(), timeout=10)

    async def log_audit_events(events):  # no way to auth: the events go to this service's log alone
        for event in events:
            log.warning("audit event not recorded: this service has no service key", **dataclasses.asdict(event))

    if local_auth:
        audit, revocations = AuditSink(local_auth.record_audit_events), local_auth.revocations_since
    elif settings.resolved_service_key():
        audit, revocations = AuditSink(record_audit_events), fetch_revocations
    else:  # said once here, rather than a failed call (and a wait for it) per poll and per audited call
        log.warning("this service has no service key: it cannot learn of revoked tokens nor record the audit "
                    "trail (set QRUNTIME_SERVICE_KEY or --service-key-file; auth must know the key)")
        audit, revocations = AuditSink(log_audit_events), None
    verifier = TokenVerifier(fetch_keys, revocations)
    domains = {service: f"{c.name}.qruntime" for c in components for service in c.service_names}
    public = frozenset().union(*(c.public_methods for c in components))
    interceptors = [CallInterceptor(domains=domains, audit=audit, verifier=verifier, public_methods=public,
                                    refused_methods=INTERNAL_METHODS if front_door else ())]
    server = grpc.aio.server(interceptors=interceptors, options=CHANNEL_OPTIONS)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, GenericOnly(server))
    names = [n for c in components for n in c.service_names]
    for name in ["", *names]:  # the library starts "" at SERVING; not before the components have started
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # What reflection.enable_server_reflection does for an aio server, but with its methods generic.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer([*names, health.SERVICE_NAME, reflection.SERVICE_NAME]), GenericOnly(server))
    handlers = LocalHandlers(server)  # the components' handlers, for the local channel
    for component in components:
        component.register(handlers)
    port = add_port(server, f"{settings.host}:{settings.port}", settings.tls_server_credentials())
    address = f"{'127.0.0.1' if settings.host in ('0.0.0.0', '::', '[::]') else settings.host}:{port}"
    await server.start()
    local = LocalChannel(handlers, interceptors, channels.get(address))  # the real one for streams
    runtime = Runtime(settings, address, channels, credentials, audit, local)
    started: list[Component] = []
    try:
        for component in components:
            started.append(component)  # a half-started component has things to give back too
            await component.start(runtime)
    except BaseException:
        # Give the port and whatever the started components hold back, then say why.
        await server.stop(0)
        await _stop_components(started, channels)
        raise
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", services=[c.name for c in components], address=f"{settings.host}:{port}")
    return Suite(server, port, components, health_servicer, runtime)


async def until_signalled() -> None:
    """Return once the process gets SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_until_signalled(
    components: Sequence[Component], settings: ServerSettings, *, front_door: bool = False
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    suite = await start_server(components, settings, front_door=front_door)
    freeze_startup_heap()
    await until_signalled()
    log.info("stopping", grace_seconds=settings.grace_seconds)
    await suite.stop()
    log.info("stopped")


def run(components: Sequence[Component], settings: ServerSettings, *, front_door: bool = False) -> None:
    """Configure logging and serve; the body of every service's main()."""
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve_until_signalled(components, settings, front_door=front_door))
