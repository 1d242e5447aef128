"""AuthService over gRPC: translates requests into TokenIssuer and AuthStore calls."""

from __future__ import annotations

import asyncio

import jwt
from google.protobuf.timestamp_pb2 import Timestamp
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc

from qruntime_kit.auth import FORWARDED_FOR_KEY, current_principal, peer_host
from qruntime_kit.errors import NotFound, PermissionDenied

from .keys import key_id_of
from .ratelimit import RateLimiter
from .store import AuthStore
from .tokens import TokenIssuer

PLANS = {"lite": auth_pb2.PLAN_LITE, "standard": auth_pb2.PLAN_STANDARD}
ROLES = {"reader": auth_pb2.ROLE_READER, "writer": auth_pb2.ROLE_WRITER, "manager": auth_pb2.ROLE_MANAGER}


def timestamp(value) -> Timestamp:
    stamp = Timestamp()
    if isinstance(value, int | float):
        stamp.FromNanoseconds(int(value * 1e9))
    else:
        stamp.FromDatetime(value)
    return stamp


def instance_message(row: dict) -> auth_pb2.Instance:
    return auth_pb2.Instance(crn=row["crn"], name=row["name"], account_id=row["account_id"],
                             plan=PLANS[row["plan"]], create_time=timestamp(row["create_time"]))


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, store: AuthStore, issuer: TokenIssuer, per_key: RateLimiter, per_peer: RateLimiter,
                 trusted_proxies: frozenset[str] = frozenset()) -> None:
        self._store = store
        self._issuer = issuer
        self._per_key = per_key
        self._per_peer = per_peer
        self._trusted_proxies = trusted_proxies

    def _peer(self, context) -> str:
        """The caller's address: the one the gateway saw, when the call came through a trusted one."""
        peer = peer_host(context.peer() or "")
        if peer in self._trusted_proxies:
            forwarded = dict(context.invocation_metadata() or ()).get(FORWARDED_FOR_KEY, "")
            return forwarded[:100] or peer
        return peer

    async def CreateToken(self, request, context):
        self._per_peer.take(self._peer(context), "peer")
        key_id = key_id_of(request.api_key)
        if key_id:
            self._per_key.take(key_id, "API key")
        token, expiry, row, roles = await asyncio.to_thread(
            self._issuer.create_token, request.api_key, request.instance, request.account, tuple(request.audiences))
        response = auth_service_pb2.CreateTokenResponse(token=token, expire_time=Timestamp(seconds=expiry))
        if row is not None:
            response.instance.CopyFrom(instance_message(row))
            ordered = _ordered_roles(roles)
            response.roles.extend(ordered)
            response.role = ordered[0] if ordered else auth_pb2.ROLE_UNSPECIFIED
        return response

    async def ExchangeToken(self, request, context):
        principal = current_principal()  # the auth interceptor verified the token, for "auth"
        if principal.is_service:
            raise PermissionDenied("only a user's own token can be exchanged", reason="NOT_A_USER_TOKEN")
        claims = jwt.decode(principal.token, options={"verify_signature": False})
        if claims.get("akid"):
            self._per_key.take(claims["akid"], "API key")
        token, expiry, row, roles = await asyncio.to_thread(
            self._issuer.exchange_token, claims, request.instance, tuple(request.audiences))
        response = auth_service_pb2.ExchangeTokenResponse(token=token, expire_time=Timestamp(seconds=expiry),
                                                          instance=instance_message(row))
        response.roles.extend(_ordered_roles(roles))
        return response

    async def CreateServiceToken(self, request, context):
        self._per_peer.take(self._peer(context), "peer")
        token, expiry = await asyncio.to_thread(self._issuer.create_service_token, request.service_key)
        return auth_service_pb2.CreateServiceTokenResponse(token=token, expire_time=Timestamp(seconds=expiry))

    async def CreateDelegatedToken(self, request, context):
        token, expiry = await asyncio.to_thread(
            self._issuer.create_delegated_token, request.service_key, request.subject_token)
        return auth_service_pb2.CreateDelegatedTokenResponse(token=token, expire_time=Timestamp(seconds=expiry))

    async def ListRevocations(self, request, context):
        current_principal().require_suite_service()
        rows = await asyncio.to_thread(self._store.revocations_since, request.since.ToNanoseconds() / 1e9)
        return auth_service_pb2.ListRevocationsResponse(revocations=[
            auth_service_pb2.Revocation(subject=r["subject"], revoke_time=timestamp(r["revoke_time"])) for r in rows])

    async def ListSigningKeys(self, request, context):
        keys = await asyncio.to_thread(self._store.signing_keys)
        response = auth_service_pb2.ListSigningKeysResponse()
        for key in keys:
            response.signing_keys.add(key_id=key["key_id"], algorithm="EdDSA",
                                      public_key_pem=key["public_key_pem"], create_time=timestamp(key["create_time"]))
        return response

    async def GetInstance(self, request, context):
        principal = current_principal()
        wanted = request.instance or principal.instance_crn
        row = await asyncio.to_thread(self._store.find_instance, [principal.account_id], wanted)
        if row is None or row["crn"] != principal.instance_crn:
            raise NotFound(f"instance {wanted!r} not found", reason="INSTANCE_NOT_FOUND", metadata={"instance": wanted})
        return auth_service_pb2.GetInstanceResponse(instance=instance_message(row))


def _ordered_roles(roles) -> list[int]:
    """The roles as the messages carry them, strongest first."""
    return [ROLES[r] for r in ("manager", "writer", "reader") if r in roles]
