"""The HTTP/JSON front door: the REST API, its OpenAPI document and the web console.

Every API route is an RPC's google.api.http binding (transcoding.py): the request is built from the
path, the query and the JSON body, sent to the same gRPC front door clients use (the suite's own
port, or the gateway's), and the response comes back as JSON. The services do every check; an error
comes back with the HTTP status of its gRPC code and a JSON body with its reason and details.
A server-streaming RPC (JobsService.WatchJob) is served as server-sent events: numbered (`id:`, the
job's event sequence) so a reconnecting client resumes with Last-Event-ID, with keep-alive comments.

Sign-in as IBM Cloud's IAM does it: `POST /identity/token` (form: grant_type, apikey) returns a
bearer token for the user's account; calls send `Authorization: Bearer <token>` and name their
instance in the `Service-CRN` header (CRN or name), for which the front door exchanges the token
(instance_tokens.py). A token got for one instance (form field `instance`) works as well.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import time
from pathlib import Path

import grpc
from aiohttp import web
from qruntime.auth.v1 import auth_service_pb2

from qruntime_auth.component import AuthComponent
from qruntime_kit.auth import audience_of
from qruntime_kit.errors import Internal, InvalidArgument, NotFound, ServiceError, from_rpc_error
from qruntime_kit.interceptors import REQUEST_ID_KEY
from qruntime_kit.logging import get_logger
from qruntime_kit.outbound import CHANNEL_OPTIONS
from qruntime_kit.secrets import write_private
from qruntime_kit.settings import ServerSettings, setting
from qruntime_kit.tls import aio_channel

from .instance_tokens import InstanceTokens, unverified_claims
from .transcoding import Route, build_request, routes, to_json

log = get_logger("http")
WEB = Path(__file__).parent / "web"
OPENAPI_FILE = WEB / "openapi.json"
IAM_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
# A body past this is refused 413 (a job's inputs and an upload fit well within it).
MAX_BODY_BYTES = 64 * 1024 * 1024
# JSON larger than this is converted in a thread, so the services sharing the event loop keep answering.
_INLINE_BYTES = 256 * 1024

# A quiet event stream gets a comment line this often (seconds), so that nothing on the way closes it.
KEEPALIVE_SECONDS = 15.0
LAST_EVENT_ID = "Last-Event-ID"

# gRPC code -> HTTP status, as google.rpc.Code documents the mapping.
HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500, grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409, grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500,
}


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """Where the HTTP/JSON API and the web console listen."""

    http_port: int = setting(8080, "port of the HTTP/JSON API and the web console; 0 picks a free one, -1: none")


def error_body(error: ServiceError, status: int | None = None) -> dict:
    """The JSON error: {"error": {code, status, message, reason, domain, metadata, field_violations,
    retry_after_seconds}} with the HTTP status as code and the gRPC code's name as status."""
    body = {"code": status or HTTP_STATUS.get(error.code, 500), "status": error.code.name, "message": error.message,
            "reason": error.reason, "domain": error.domain, "metadata": error.metadata,
            "field_violations": [{"field": f, "description": d} for f, d in error.field_violations]}
    if error.retry_after is not None:
        body["retry_after_seconds"] = error.retry_after
    return {"error": body}


def error_response(error: ServiceError, status: int | None = None) -> web.Response:
    body = error_body(error, status)
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    return web.json_response(body, status=body["error"]["code"], headers=headers)


@web.middleware
async def _access_log(request: web.Request, handler):
    """One structured line per API call: method, path, status, time and the services' request id."""
    start = time.perf_counter()
    response = await handler(request)
    if request.path.startswith(("/api/v1/", "/identity/")):
        log.info("http", method=request.method, path=request.path, status=response.status,
                 ms=round((time.perf_counter() - start) * 1000, 1), request_id=response.headers.get(REQUEST_ID_KEY, ""))
    return response


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ServiceError as error:
        return error_response(error)
    except grpc.aio.AioRpcError as err:
        response = error_response(from_rpc_error(err))
        response.headers.update({k: v for k, v in (err.trailing_metadata() or ()) if k == REQUEST_ID_KEY})
        return response
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as err:
        if not request.path.startswith(("/api/", "/identity/")):
            raise
        error = NotFound(f"no route {request.method} {request.path}; see /api/openapi.json", reason="ROUTE_NOT_FOUND")
        if isinstance(err, web.HTTPMethodNotAllowed):
            error = ServiceError(f"{request.method} is not allowed on {request.path}; allowed: "
                                 f"{', '.join(sorted(err.allowed_methods))}", reason="METHOD_NOT_ALLOWED")
            error.code = grpc.StatusCode.UNIMPLEMENTED
            response = error_response(error, 405)
            response.headers["Allow"] = ", ".join(sorted(err.allowed_methods))
            return response
        return error_response(error)
    except web.HTTPRequestEntityTooLarge:
        error = ServiceError(f"the request body is larger than {MAX_BODY_BYTES} bytes", reason="REQUEST_TOO_LARGE",
                             metadata={"max_bytes": MAX_BODY_BYTES})
        error.code = grpc.StatusCode.INVALID_ARGUMENT
        return error_response(error, 413)
    except web.HTTPException:
        raise
    except Exception:  # a bug here: the caller still gets a JSON error, the log the traceback
        log.exception("http request failed", path=request.path)
        return error_response(Internal("the HTTP front door failed; see its log", reason="INTERNAL"))


def _metadata(request: web.Request, authorization: str = "") -> tuple[tuple[str, str], ...]:
    """The gRPC metadata of an HTTP call: its bearer token, request id and the caller's address."""
    remote = request.remote or ""
    metadata = [("x-forwarded-for", f"ipv6:[{remote}]" if ":" in remote else f"ipv4:{remote}")]
    authorization = authorization or request.headers.get("Authorization", "")
    if authorization:
        metadata.append(("authorization", authorization))
    if REQUEST_ID_KEY in request.headers:
        metadata.append((REQUEST_ID_KEY, request.headers[REQUEST_ID_KEY]))
    return tuple(metadata)


def _last_event_id(request: web.Request) -> int:
    text = request.headers[LAST_EVENT_ID].strip()
    if not text.isdigit():
        raise InvalidArgument(f"{LAST_EVENT_ID} must be an event id this stream sent (a number), not {text[:40]!r}",
                              reason="INVALID_LAST_EVENT_ID", field_violations=[(LAST_EVENT_ID, "a number")])
    return int(text)


def _file(path: Path):
    async def handle(_: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    return handle


def _redirect(location: str):
    async def handle(_: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return handle


class FrontDoor:
    """The aiohttp application over one gRPC channel to the front door."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self.tokens = InstanceTokens(self._exchange)
        self._exchange_call = channel.unary_unary(
            "/qruntime.auth.v1.AuthService/ExchangeToken", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=auth_service_pb2.ExchangeTokenResponse.FromString)
        self.routes = routes()
        self.app = web.Application(middlewares=[_access_log, _errors], client_max_size=MAX_BODY_BYTES)
        self.app.router.add_post("/identity/token", self._token)
        for route in self.routes:
            handler = self._streaming(route) if route.streaming else self._unary(route)
            self.app.router.add_route(route.verb, route.aiohttp_path(), handler)
        self.app.router.add_get("/api/openapi.json", _file(OPENAPI_FILE))
        self.app.router.add_get("/api/docs", _file(WEB / "docs.html"))
        self.app.router.add_get("/console/", _file(WEB / "index.html"))
        self.app.router.add_get("/", _redirect("/console/"))
        self.app.router.add_static("/static/", WEB)

    async def _request(self, route: Route, request: web.Request, body: bytes):
        path_values = {name: request.match_info[f"v{i}"] for i, name in enumerate(route.variables)}
        query = {key: request.query.getall(key) for key in request.query}
        if len(body) > _INLINE_BYTES:  # a large body (circuits, uploads) is parsed off the event loop
            return await asyncio.to_thread(build_request, route, path_values, query, body)
        return build_request(route, path_values, query, body)

    def _unary(self, route: Route):
        method = self._channel.unary_unary(route.grpc_path, request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=route.response_class().FromString)

        async def handle(request: web.Request) -> web.Response:
            message = await self._request(route, request, await request.read() if route.body else b"")
            metadata, scope = await self._credentials(route, request)
            call = method(message, metadata=metadata, timeout=60)
            try:
                response = await call
            except grpc.aio.AioRpcError as err:
                self._forget_refused(scope, err)
                raise
            headers = {k: v for k, v in (await call.trailing_metadata() or ()) if k == REQUEST_ID_KEY}
            if response.ByteSize() > _INLINE_BYTES:  # a large result is written off the event loop
                text = await asyncio.to_thread(lambda: json.dumps(to_json(response)))
            else:
                text = json.dumps(to_json(response))
            return web.Response(text=text, content_type="application/json", headers=headers)

        return handle

    def _streaming(self, route: Route):
        call = self._channel.unary_stream(route.grpc_path, request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=route.response_class().FromString)

        async def handle(request: web.Request) -> web.StreamResponse:
            message = await self._request(route, request, b"")
            if route.resume is not None and LAST_EVENT_ID in request.headers:
                field = route.resume[0]  # a reconnecting EventSource: after the last event it saw
                setattr(message, field, max(getattr(message, field), _last_event_id(request)))
            metadata, scope = await self._credentials(route, request)
            stream = call(message, metadata=metadata)
            # Every read is waited for with a timeout, never cancelled (that would end the call): a quiet
            # stream gets a comment line every KEEPALIVE_SECONDS so nothing on the way closes it.
            reading = asyncio.ensure_future(stream.read())
            try:
                await asyncio.wait({reading}, timeout=KEEPALIVE_SECONDS)
                refusal = reading.exception() if reading.done() else None
                if isinstance(refusal, grpc.aio.AioRpcError):  # refused (no token, not found): JSON, its status
                    self._forget_refused(scope, refusal)
                    return error_response(from_rpc_error(refusal))
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache"})
                await response.prepare(request)
                try:
                    while True:
                        while not (await asyncio.wait({reading}, timeout=KEEPALIVE_SECONDS))[0]:
                            await response.write(b": keep-alive\n\n")
                        item = reading.result()
                        if item is grpc.aio.EOF:
                            break
                        event_id = route.event_id(item)
                        head = f"id: {event_id}\n" if event_id else ""
                        await response.write(f"{head}data: {json.dumps(to_json(item))}\n\n".encode())
                        reading = asyncio.ensure_future(stream.read())
                    await response.write(b"event: end\ndata: {}\n\n")
                except grpc.aio.AioRpcError as err:
                    await response.write(
                        f"event: error\ndata: {json.dumps(error_body(from_rpc_error(err)))}\n\n".encode())
                return response
            finally:
                reading.cancel()  # done already, unless the browser went away
                stream.cancel()  # also then: so does the watch

        return handle

    async def _credentials(self, route: Route, request: web.Request
                           ) -> tuple[tuple[tuple[str, str], ...], tuple[str, str] | None]:
        """The call's metadata, with the caller's token exchanged for one scoped to the Service-CRN's
        instance where it is not already (the admin API's calls are for the account: never); and the
        (token, instance) the exchange was for, or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token, instance = token.strip(), request.headers.get("Service-CRN", "").strip()
        claims = unverified_claims(token) if scheme.lower() == "bearer" else None
        if claims is None or audience_of(route.grpc_path) == "admin" or route.grpc_path in AuthComponent.public_methods:
            return _metadata(request), None
        if not instance:
            if claims.get("kind") == "user" and not claims.get("ins"):  # an account token: which instance?
                raise InvalidArgument(
                    "name the instance of this call in the Service-CRN header (its CRN or name); your token is "
                    "for your account", reason="SERVICE_CRN_MISSING",
                    field_violations=[("Service-CRN", "an instance CRN (crn:v1:...) or name")])
            return _metadata(request), None
        if claims.get("ins") == instance:
            return _metadata(request), None
        derived = await self.tokens.get(token, instance)
        return _metadata(request, f"Bearer {derived}"), (token, instance)

    async def _exchange(self, token: str, instance: str) -> tuple[str, int]:
        response = await self._exchange_call(auth_service_pb2.ExchangeTokenRequest(instance=instance),
                                             metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        return response.token, response.expire_time.seconds

    def _forget_refused(self, scope: tuple[str, str] | None, err: grpc.aio.AioRpcError) -> None:
        """A derived token a service refused (revoked, expired) is exchanged again next time."""
        if scope is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED:
            self.tokens.forget(*scope)

    async def _token(self, request: web.Request) -> web.Response:
        """IBM Cloud IAM's token endpoint: form grant_type and apikey -> access_token. A token for one
        instance (form `instance`, or a Service-CRN header) is given as before."""
        form = await request.post()
        if form.get("grant_type") != IAM_GRANT:
            raise InvalidArgument(f"grant_type must be {IAM_GRANT}", reason="UNSUPPORTED_GRANT_TYPE",
                                  field_violations=[("grant_type", IAM_GRANT)])
        instance = str(form.get("instance", "") or request.headers.get("Service-CRN", ""))
        call = self._channel.unary_unary(
            "/qruntime.auth.v1.AuthService/CreateToken", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=auth_service_pb2.CreateTokenResponse.FromString)
        # The API key alone gives a token for the user's account (or, with `account`, the one named),
        # good for every instance of it a call names in Service-CRN.
        account = "" if instance else str(form.get("account", "") or "-")
        message = auth_service_pb2.CreateTokenRequest(api_key=str(form.get("apikey", "")), instance=instance,
                                                      account=account)
        response = await call(message, metadata=_metadata(request)[:1], timeout=30)
        expiration = response.expire_time.seconds
        return web.json_response({
            "access_token": response.token, "token_type": "Bearer", "expires_in": max(0, expiration - int(time.time())),
            "expiration": expiration, "scope": "ibm openid", "instance": to_json(response.instance),
        })


class HttpFrontDoor:
    """The HTTP front door as a component of `qruntime up` (started last, drained first), or of the gateway.

    It calls the suite's own gRPC port; with bootstrap_file it writes its URL into it as http_url."""

    name = "http"
    service_names: tuple[str, ...] = ()
    public_methods: frozenset[str] = frozenset()

    def __init__(self, host: str, port: int, grpc_address: str = "", settings: ServerSettings | None = None,
                 bootstrap_file: Path | None = None) -> None:
        self._host, self._port, self._grpc_address = host, port, grpc_address
        self._settings, self._bootstrap_file = settings, bootstrap_file
        self._runner: web.AppRunner | None = None
        self._channel: grpc.aio.Channel | None = None
        self.front_door: FrontDoor | None = None
        self.url = ""

    def register(self, server) -> None:
        pass

    def _tls(self) -> tuple[ssl.SSLContext | None, grpc.ChannelCredentials | None]:
        """With the server's certificate: HTTPS on this port too, and a TLS channel to the gRPC port
        trusting tls_ca_file (or, without one, the certificate itself, as for a self-signed one)."""
        settings = self._settings
        if settings is None or not settings.tls_cert_file:
            return None, settings.tls_channel_credentials() if settings else None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        credentials = settings.tls_channel_credentials() or grpc.ssl_channel_credentials(
            Path(settings.tls_cert_file).read_bytes())
        return context, credentials

    async def start(self, runtime=None) -> None:
        if runtime is not None:
            self._settings = self._settings or runtime.settings
        context, credentials = self._tls()
        self._channel = aio_channel(self._grpc_address or runtime.address, credentials, CHANNEL_OPTIONS)
        grace = self._settings.grace_seconds if self._settings else 5.0  # for streams still open at shutdown
        self.front_door = FrontDoor(self._channel)
        self._runner = web.AppRunner(self.front_door.app, access_log=None, shutdown_timeout=grace)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=context)
        try:
            await site.start()
        except OSError as err:
            await self.stop()
            raise SystemExit(f"qruntime: cannot serve HTTP on {self._host}:{self._port}: {err.strerror}; "
                             "choose another --http-port (0: any free one, -1: none)") from None
        port = self._runner.addresses[0][1]
        host = "127.0.0.1" if self._host in ("0.0.0.0", "::", "") else self._host
        self.url = f"{'https' if context else 'http'}://{host}:{port}"
        if self._bootstrap_file is not None and self._bootstrap_file.exists():
            written = json.loads(self._bootstrap_file.read_text())
            if written.get("http_url") != self.url:
                write_private(self._bootstrap_file, json.dumps({**written, "http_url": self.url}, indent=2) + "\n")
        log.info("http serving", url=self.url, api=f"{self.url}/api/v1", console=f"{self.url}/console/")

    async def drain(self) -> None:
        """At shutdown, first of all: stop taking HTTP calls while the services still answer."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def stop(self) -> None:
        await self.drain()
        if self._channel is not None:
            await self._channel.close()
