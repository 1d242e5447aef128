"""The connection of one service object: its gRPC channel, its bearer token and the one way to call.

Every call goes through :meth:`Transport.call`, which sends ``authorization: Bearer <token>`` and a
fresh ``x-request-id`` (uuid4 hex), applies the deadline, and turns ``grpc.RpcError`` into the
exceptions of :mod:`qruntime.exceptions`. A call refused as UNAUTHENTICATED with reason
``TOKEN_EXPIRED`` gets a new token and is sent once more.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from .admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from .auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from .devices.v1 import devices_service_pb2_grpc
from .exceptions import RuntimeServiceError, from_grpc_error
from .jobs.v1 import jobs_service_pb2_grpc, sessions_service_pb2_grpc
from .programs.v1 import programs_service_pb2_grpc

DEFAULT_TIMEOUT = 30.0
"""Seconds one call may take before it fails with DEADLINE_EXCEEDED."""
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message the channel sends or receives: circuits and results can be big."""
TOKEN_EXPIRED_REASON = "TOKEN_EXPIRED"
# A token revoked because a role changed is renewed like an expired one: the key decides anew.
_RENEWABLE_REASONS = (TOKEN_EXPIRED_REASON, "TOKEN_REVOKED")
"""The ErrorInfo reason of an UNAUTHENTICATED status that a new token cures."""
REFRESH_MARGIN_S = 60.0
"""A cached token is replaced this many seconds before it expires."""
REQUEST_ID_METADATA_KEY = "x-request-id"
"""The metadata key that carries the id of one call, for the servers' logs."""

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def new_request_id() -> str:
    """A fresh id for one call."""
    return uuid.uuid4().hex


def create_channel(url: str, ca_file: str | None = None) -> grpc.Channel:
    """A channel to ``url`` ("host:port") that allows messages of up to 64 MiB: over TLS trusting the
    PEM CA bundle ``ca_file`` when one is given, plaintext otherwise."""
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if ca_file:
        with open(ca_file, "rb") as file:
            credentials = grpc.ssl_channel_credentials(file.read())
        return grpc.secure_channel(url, credentials, options=options)
    return grpc.insecure_channel(url, options=options)


class _TokenSource:
    """Exchanges the API key for a bearer token and caches it until shortly before it expires.

    Thread-safe: concurrent callers share one CreateToken call; a caller told its token expired
    refreshes only if no other thread has done so already.
    """

    def __init__(
        self,
        stub: auth_service_pb2_grpc.AuthServiceStub,
        api_key: str,
        instance: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stub = stub
        self._api_key = api_key
        self._instance = instance
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._refresh_at = 0.0
        self._response: auth_service_pb2.CreateTokenResponse | None = None

    @property
    def response(self) -> auth_service_pb2.CreateTokenResponse:
        """The latest CreateToken response (the resolved instance, the role), fetching one if needed."""
        self.token()
        assert self._response is not None
        return self._response

    def token(self) -> str:
        """A token that is not about to expire."""
        with self._lock:
            if not self._token or self._clock() >= self._refresh_at:
                self._fetch()
            return self._token

    def refresh(self, stale: str | None = None) -> str:
        """A new token; with ``stale``, only if the cached token is still that one."""
        with self._lock:
            if stale is None or self._token == stale or not self._token:
                self._fetch()
            return self._token

    def _fetch(self) -> None:
        request = auth_service_pb2.CreateTokenRequest(api_key=self._api_key, instance=self._instance)
        request_id = new_request_id()
        try:
            response = self._stub.CreateToken(
                request, timeout=self._timeout, metadata=((REQUEST_ID_METADATA_KEY, request_id),)
            )
        except grpc.RpcError as err:
            raise from_grpc_error(err, request_id=request_id) from err
        self._token = response.token
        self._response = response
        if response.HasField("expire_time"):
            self._refresh_at = response.expire_time.ToNanoseconds() / 1e9 - REFRESH_MARGIN_S
        else:
            self._refresh_at = float("inf")  # no expiry said: keep it until a call reports TOKEN_EXPIRED


class Transport:
    """The channel, stubs and token of one service object."""

    def __init__(
        self, url: str, api_key: str, instance: str, *, timeout: float = DEFAULT_TIMEOUT, ca_file: str | None = None
    ) -> None:
        self.timeout = timeout
        self.channel = create_channel(url, ca_file)
        self.auth = auth_service_pb2_grpc.AuthServiceStub(self.channel)
        self.programs = programs_service_pb2_grpc.ProgramsServiceStub(self.channel)
        self.jobs = jobs_service_pb2_grpc.JobsServiceStub(self.channel)
        self.sessions = sessions_service_pb2_grpc.SessionsServiceStub(self.channel)
        self.devices = devices_service_pb2_grpc.DevicesServiceStub(self.channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        self.tokens = _TokenSource(self.auth, api_key, instance, timeout=timeout)
        self._api_key, self._instance = api_key, instance
        self.service: Any = None  # the IBMRuntimeService using it, so that its backends can reach it

    def call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None = None,
    ) -> _Response:
        """Call ``method`` with the token and a request id; map a failure to a RuntimeServiceError.

        ``timeout`` is in seconds; None uses the transport's (30 s unless the service object was told
        otherwise).
        """
        timeout = self.timeout if timeout is None else timeout
        request_id = new_request_id()
        token = self.tokens.token()
        for attempt in (1, 2):
            metadata = (("authorization", f"Bearer {token}"), (REQUEST_ID_METADATA_KEY, request_id))
            try:
                return method(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as err:
                error = from_grpc_error(err, request_id=request_id)
                if attempt == 2 or not _is_token_expired(error):
                    raise error from err
            # The retry keeps the request id: it is the same request, and nothing ran the first time.
            token = self.tokens.refresh(stale=token)
        raise AssertionError("unreachable")  # pragma: no cover

    def stream(
        self,
        method: grpc.UnaryStreamMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None = None,
        on_call: Callable[[grpc.Future], None] | None = None,
    ) -> Iterator[_Response]:
        """Call a server-streaming ``method`` as :meth:`call` does and yield its responses; ``timeout``
        None means no deadline (a stream may follow a job for hours). ``on_call`` receives the gRPC
        call, which another thread may ``cancel()``; closing the iterator cancels it too."""
        request_id = new_request_id()
        token = self.tokens.token()
        for attempt in (1, 2):
            metadata = (("authorization", f"Bearer {token}"), (REQUEST_ID_METADATA_KEY, request_id))
            responses = method(request, timeout=timeout, metadata=metadata)
            if on_call is not None:
                on_call(responses)
            received = False
            try:
                for response in responses:
                    received = True
                    yield response
                return
            except grpc.RpcError as err:
                error = from_grpc_error(err, request_id=request_id)
                if attempt == 2 or received or not _is_token_expired(error):
                    raise error from err
            finally:
                responses.cancel()
            token = self.tokens.refresh(stale=token)

    def paginate(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, Any],
        request: _Request,
        items_field: str,
        timeout: float | None = None,
    ) -> Iterator[Any]:
        """Yield the ``items_field`` entries of every page, following ``next_page_token`` lazily."""
        while True:
            response = self.call(method, request, timeout)
            yield from getattr(response, items_field)
            next_token = response.next_page_token
            if not next_token:
                return
            request.page_token = next_token  # type: ignore[attr-defined]

    def account_instances(self) -> list[str]:
        """The CRNs of the account's instances, with a token of its own for the admin API (the
        instance's token is not for it)."""
        request_id = new_request_id()
        try:
            token = self.auth.CreateToken(
                auth_service_pb2.CreateTokenRequest(api_key=self._api_key, instance=self._instance,
                                                    audiences=["admin"]),
                timeout=self.timeout, metadata=((REQUEST_ID_METADATA_KEY, request_id),)).token
            response = self.admin.ListInstances(
                admin_service_pb2.ListInstancesRequest(page_size=1000), timeout=self.timeout,
                metadata=(("authorization", f"Bearer {token}"), (REQUEST_ID_METADATA_KEY, request_id)))
        except grpc.RpcError as err:
            raise from_grpc_error(err, request_id=request_id) from err
        return [i.crn for i in response.instances]

    def close(self) -> None:
        """Close the channel; calls made after this fail."""
        self.channel.close()


def _is_token_expired(error: RuntimeServiceError) -> bool:
    return error.code == grpc.StatusCode.UNAUTHENTICATED and error.reason in _RENEWABLE_REASONS
