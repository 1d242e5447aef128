"""Signed short-lived tokens: the auth service issues them, every service verifies them.

Tokens are JWTs signed with Ed25519 (EdDSA). Services verify them locally with the public keys
the auth service lists, fetched once and again only when a token names an unknown key id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .auth import Principal
from .errors import Unauthenticated, Unavailable

ISSUER = "qruntime-auth"
AUDIENCE = "qruntime"
ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 30
REFETCH_INTERVAL_SECONDS = 5.0


def new_private_key_pem() -> str:
    """A fresh Ed25519 private key, PEM (PKCS#8)."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


def public_key_pem(private_key_pem: str) -> str:
    """The public half of a PEM private key, PEM (SubjectPublicKeyInfo)."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def issue_token(principal: Principal, *, key_id: str, private_key_pem: str, ttl_seconds: int) -> tuple[str, int]:
    """Sign a token for the principal; returns (token, expiry as Unix seconds)."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": principal.subject,
        "kind": principal.kind,
        "acct": principal.account_id,
        "ins": principal.instance_crn,
        "plan": principal.plan,
        "act": sorted(principal.actions),
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, private_key_pem, algorithm=ALGORITHM, headers={"kid": key_id})
    return token, claims["exp"]


KeyFetcher = Callable[[], Awaitable[Iterable[tuple[str, str]]]]


class TokenVerifier:
    """Checks bearer tokens against the auth service's public keys, cached by key id."""

    def __init__(self, fetch_keys: KeyFetcher) -> None:
        self._fetch_keys = fetch_keys
        self._keys: dict[str, object] = {}
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Principal:
        try:
            key_id = jwt.get_unverified_header(token).get("kid", "")
        except jwt.PyJWTError:
            raise Unauthenticated(
                "the bearer token is not a token this service issued", reason="TOKEN_INVALID"
            ) from None
        key = await self._key(key_id)
        try:
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER, leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "kind"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                "the bearer token has expired; get a new one with your API key", reason="TOKEN_EXPIRED"
            ) from None
        except jwt.PyJWTError as err:
            raise Unauthenticated(f"the bearer token is not valid: {err}", reason="TOKEN_INVALID") from None
        return Principal(
            subject=claims["sub"],
            kind=claims["kind"],
            account_id=claims.get("acct", ""),
            instance_crn=claims.get("ins", ""),
            plan=claims.get("plan", ""),
            actions=frozenset(claims.get("act", ())),
            token=token,
        )

    async def _key(self, key_id: str) -> object:
        if key_id in self._keys:
            return self._keys[key_id]
        async with self._lock:
            if key_id not in self._keys and time.monotonic() - self._last_fetch > REFETCH_INTERVAL_SECONDS:
                try:
                    fetched = await self._fetch_keys()
                except Exception as err:  # the auth service is down or unreachable
                    raise Unavailable(f"cannot fetch token signing keys: {err}", reason="AUTH_UNAVAILABLE") from None
                self._last_fetch = time.monotonic()
                self._keys = {kid: serialization.load_pem_public_key(pem.encode()) for kid, pem in fetched}
        if key_id not in self._keys:
            raise Unauthenticated("the bearer token was signed by an unknown key", reason="TOKEN_INVALID")
        return self._keys[key_id]
