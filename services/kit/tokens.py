"""Signed short-lived tokens: the auth service issues them, every service verifies them.

Tokens are JWTs signed with Ed25519 (EdDSA, the only algorithm accepted). Services verify them
locally with the public keys the auth service lists, fetched once and again only when a token names
an unknown key id. A token names the services it is for (`aud`: "jobs", "programs", ...): each service
accepts only tokens that name it. Whatever lifetime a signature carries, the verifier accepts none
longer than MAX_LIFETIME_SECONDS, so a stolen signing key cannot mint a token that lives for years
past the key's rotation.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .auth import Principal
from .errors import Unauthenticated, Unavailable

ISSUER = "qruntime-auth"
ALGORITHM = "EdDSA"
# The services a user's token is for by default: every one a client calls through the front door.
USER_AUDIENCES = ("auth", "admin", "programs", "jobs", "devices")
MAX_LIFETIME_SECONDS = 3600
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


def issue_token(
    principal: Principal, *, key_id: str, private_key_pem: str, ttl_seconds: int, audiences: Iterable[str],
    api_key_id: str = "",
) -> tuple[str, int]:
    """Sign a token for the principal, for the named services; returns (token, expiry as Unix seconds).
    api_key_id names the API key it was exchanged for, so deleting the key revokes the token."""
    now = time.time()
    claims = {
        "iss": ISSUER,
        "aud": sorted(set(audiences)),
        "sub": principal.subject,
        "kind": principal.kind,
        "acct": principal.account_id,
        "ins": principal.instance_crn,
        "plan": principal.plan,
        "act": sorted(principal.actions),
        "arole": principal.account_role,
        "op": principal.operator,
        "akid": api_key_id,
        "iat": round(now, 3),  # ms: a token got right after a revocation is not caught by it
        "exp": int(now) + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, private_key_pem, algorithm=ALGORITHM, headers={"kid": key_id})
    return token, claims["exp"]


KeyFetcher = Callable[[], Awaitable[Iterable[tuple[str, str]]]]
# Revocations made since a time (Unix seconds): (subject, revoke time) pairs, the subject a user id
# or an API key id; tokens of that subject issued up to that time no longer count.
RevocationFetcher = Callable[[float], Awaitable[Iterable[tuple[str, float]]]]
REVOCATION_POLL_SECONDS = 2.0
VERIFIED_CACHE_SIZE = 10_000  # with the poll's own time, a revocation takes effect within 5 s


class TokenVerifier:
    """Checks bearer tokens against the auth service's public keys, cached by key id, and against
    its revocations, polled every REVOCATION_POLL_SECONDS while calls come in."""

    def __init__(self, fetch_keys: KeyFetcher, fetch_revocations: RevocationFetcher | None = None) -> None:
        self._fetch_keys = fetch_keys
        self._keys: dict[str, object] = {}
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        self._fetch_revocations = fetch_revocations
        # Tokens whose signature and fixed claims were verified, by their exact text: a client sends
        # the same token for an hour, so its Ed25519 check and JSON parse are done once. Expiry,
        # audience and revocation are still checked on every call.
        self._verified: collections.OrderedDict[str, tuple[dict, Principal]] = collections.OrderedDict()
        self._revoked: dict[str, float] = {}
        self._polled_at = float("-inf")  # time.time() of the last successful poll
        self._poll_lock = asyncio.Lock()

    async def verify(self, token: str, audience: str) -> Principal:
        """The principal of a token that names audience (the called service's short name)."""
        cached = self._verified.get(token)
        if cached is not None:
            claims, principal = cached
            if time.time() > claims["exp"] + LEEWAY_SECONDS:
                del self._verified[token]
                raise Unauthenticated(
                    "the bearer token has expired; get a new one with your API key", reason="TOKEN_EXPIRED")
            if audience not in claims["aud"]:
                raise Unauthenticated(f"the bearer token is not for the {audience} service",
                                      reason="TOKEN_WRONG_AUDIENCE", metadata={"audience": audience})
            await self._check_not_revoked(claims)
            return principal
        try:
            key_id = jwt.get_unverified_header(token).get("kid", "")
        except jwt.PyJWTError:
            raise Unauthenticated(
                "the bearer token is not a token this service issued", reason="TOKEN_INVALID"
            ) from None
        key = await self._key(key_id)
        try:
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=audience, issuer=ISSUER, leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "kind", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                "the bearer token has expired; get a new one with your API key", reason="TOKEN_EXPIRED"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the bearer token is not for the {audience} service", reason="TOKEN_WRONG_AUDIENCE",
                metadata={"audience": audience},
            ) from None
        except jwt.PyJWTError as err:
            raise Unauthenticated(f"the bearer token is not valid: {err}", reason="TOKEN_INVALID") from None
        if not isinstance(claims["iat"], int | float) or claims["iat"] > time.time() + LEEWAY_SECONDS:
            raise Unauthenticated("the bearer token was issued in the future", reason="TOKEN_INVALID")
        if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
            raise Unauthenticated(
                f"the bearer token lives longer than the {MAX_LIFETIME_SECONDS} s any token may",
                reason="TOKEN_LIFETIME_TOO_LONG",
            )
        await self._check_not_revoked(claims)
        principal = Principal(
            subject=claims["sub"],
            kind=claims["kind"],
            account_id=claims.get("acct", ""),
            instance_crn=claims.get("ins", ""),
            plan=claims.get("plan", ""),
            actions=frozenset(claims.get("act", ())),
            account_role=claims.get("arole", ""),
            operator=claims.get("op") is True,
            token=token,
        )
        claims["aud"] = [claims["aud"]] if isinstance(claims["aud"], str) else list(claims["aud"])
        self._verified[token] = (claims, principal)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _check_not_revoked(self, claims: dict) -> None:
        if self._fetch_revocations is None:
            return
        if time.time() - self._polled_at > REVOCATION_POLL_SECONDS:
            async with self._poll_lock:
                started = time.time()
                if started - self._polled_at > REVOCATION_POLL_SECONDS:
                    # Anything older than a token's lifetime cannot matter; overlap a poll for clock steps.
                    since = max(self._polled_at - REVOCATION_POLL_SECONDS, started - MAX_LIFETIME_SECONDS - 60)
                    try:
                        fetched = await self._fetch_revocations(since)
                    except Exception as err:  # auth unreachable: it cannot revoke anything meanwhile either
                        structlog.get_logger("tokens").warning("cannot fetch revocations", error=str(err))
                    else:
                        self._revoked.update(fetched)
                        self._polled_at = started
                        horizon = started - MAX_LIFETIME_SECONDS - 60
                        self._revoked = {s: t for s, t in self._revoked.items() if t > horizon}
        issued = claims["iat"]
        for subject in (claims["sub"], claims.get("akid", "")):
            if subject and self._revoked.get(subject, float("-inf")) >= issued:
                raise Unauthenticated(
                    "the bearer token was revoked (its API key, its user or their roles changed); "
                    "get a new one with your API key", reason="TOKEN_REVOKED",
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
