"""Calls from one service to another: one channel per address, and the credentials to send.

A call on behalf of a user forwards the user's own token, so the callee applies the user's rights.
A call the service makes for itself (running a job long after the user's token expired) uses a
service token, got from the auth service with the service API key and renewed before it expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from .auth import Principal
from .errors import FailedPrecondition, from_rpc_error
from .interceptors import REQUEST_ID_KEY, current_request_id
from .tls import aio_channel

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A peer that was down (restarted, killed) is tried again within 2 s of its return, not after
    # gRPC's default backoff of up to two minutes: until then every call through it fails at once.
    ("grpc.max_reconnect_backoff_ms", 2000),
)
RENEW_BEFORE_SECONDS = 60
T = TypeVar("T")


class Channels:
    """Async channels to other services, one per address, closed together; over TLS when given
    credentials (see qruntime_kit.tls)."""

    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials = credentials

    def get(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = aio_channel(address, self._credentials, CHANNEL_OPTIONS)
        return self._channels[address]

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels))


# Exchanges a service API key for (token, expiry as Unix seconds).
KeyExchange = Callable[[str], Awaitable[tuple[str, int]]]


def exchange_over_grpc(auth_channel: Callable[[], grpc.aio.Channel]) -> KeyExchange:
    """The exchange of a separate service: AuthService.CreateServiceToken, on the auth service's
    own (internal) address."""

    async def exchange(service_key: str) -> tuple[str, int]:
        stub = auth_service_pb2_grpc.AuthServiceStub(auth_channel())
        request = auth_service_pb2.CreateServiceTokenRequest(service_key=service_key)
        response = await call(stub.CreateServiceToken, request)
        return response.token, response.expire_time.seconds

    return exchange


class Credentials:
    """Builds the metadata of an outgoing call: a bearer token and the current request id."""

    def __init__(self, exchange: KeyExchange, service_key: str) -> None:
        self._exchange = exchange
        self._service_key = service_key
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def metadata(self, on_behalf_of: Principal | None = None) -> tuple[tuple[str, str], ...]:
        token = on_behalf_of.token if on_behalf_of is not None else await self.service_token()
        request_id = current_request_id()
        return (("authorization", f"Bearer {token}"), *([(REQUEST_ID_KEY, request_id)] if request_id else []))

    async def service_token(self) -> str:
        if not self._service_key:
            raise FailedPrecondition(
                "this service has no service API key to call other services with "
                "(set QRUNTIME_SERVICE_KEY or --service-key-file)",
                reason="SERVICE_KEY_MISSING",
            )
        async with self._lock:
            if time.time() > self._expires - RENEW_BEFORE_SECONDS:
                self._token, self._expires = await self._exchange(self._service_key)
        return self._token


async def call(method: Callable[..., Awaitable[T]], request, *, metadata=(), timeout: float = 30.0) -> T:
    """Call another service; its error comes back as the same ServiceError, code and reason kept."""
    try:
        return await method(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None
