"""Token verification: only our algorithm, audience and issuer, unexpired, by a key the auth service lists."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time

import jwt
import pytest

import qruntime_kit.tokens
from qruntime_kit.auth import USER, Principal
from qruntime_kit.errors import ServiceError, Unauthenticated
from qruntime_kit.tokens import ALGORITHM, ISSUER, TokenVerifier, issue_token, new_private_key_pem
from qruntime_kit.tokens import public_key_pem as public_of

KEY = new_private_key_pem()
PRINCIPAL = Principal(subject="user-1", kind=USER, account_id="a", instance_crn="crn:1", plan="lite",
                      actions=frozenset({"quantum-computing.job.read"}))
AUDIENCE = "jobs"


class Keys:
    """The auth service's key list, counting how often it is fetched."""

    def __init__(self, *keys: tuple[str, str]) -> None:
        self.keys, self.fetches, self.down = list(keys), 0, False

    async def __call__(self):
        self.fetches += 1
        if self.down:
            raise ConnectionError("auth is down")
        return [(kid, public_of(pem)) for kid, pem in self.keys]


def verify(verifier: TokenVerifier, token: str, audience: str = AUDIENCE) -> Principal:
    return asyncio.run(verifier.verify(token, audience))


def reason_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(ServiceError) as caught:
        verify(verifier, token)
    return caught.value.reason


def claims(**changes) -> dict:
    """Valid claims with some changed; a change to None leaves that claim out."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": [AUDIENCE, "programs"], "sub": "user-1", "kind": USER, "iat": now, "exp": now + 60}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def signed(payload: dict | None = None, *, key: str = KEY, kid: str = "k1") -> str:
    return jwt.encode(payload or claims(), key, algorithm=ALGORITHM, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_token_the_auth_service_issued_gives_its_principal():
    token, _ = issue_token(PRINCIPAL, key_id="k1", private_key_pem=KEY, ttl_seconds=60, audiences=["jobs"])
    assert verify(TokenVerifier(Keys(("k1", KEY))), token) == dataclasses.replace(PRINCIPAL, token=token)


def test_a_token_is_only_for_the_services_it_names():
    token, _ = issue_token(PRINCIPAL, key_id="k1", private_key_pem=KEY, ttl_seconds=60, audiences=["jobs"])
    verifier = TokenVerifier(Keys(("k1", KEY)))
    assert verify(verifier, token, "jobs").subject == "user-1"
    with pytest.raises(Unauthenticated) as caught:
        verify(verifier, token, "devices")  # a token jobs was given cannot be replayed to devices
    assert caught.value.reason == "TOKEN_WRONG_AUDIENCE" and "devices" in caught.value.message


def test_the_verifier_caps_a_tokens_lifetime_whatever_its_signature_says():
    now = int(time.time())
    ten_years = signed(claims(iat=now, exp=now + 10 * 365 * 86400))
    assert reason_of(TokenVerifier(Keys(("k1", KEY))), ten_years) == "TOKEN_LIFETIME_TOO_LONG"
    from_the_future = signed(claims(iat=now + 3600, exp=now + 3660))
    assert reason_of(TokenVerifier(Keys(("k1", KEY))), from_the_future) == "TOKEN_INVALID"
    assert verify(TokenVerifier(Keys(("k1", KEY))), signed(claims(iat=now, exp=now + 3600))).subject == "user-1"


def test_a_revoked_subject_s_earlier_tokens_are_refused_and_later_ones_accepted(monkeypatch):
    revoked: dict[str, float] = {}

    async def revocations(since):
        return list(revoked.items())

    monkeypatch.setattr(qruntime_kit.tokens, "REVOCATION_POLL_SECONDS", 0)
    verifier = TokenVerifier(Keys(("k1", KEY)), revocations)
    before = signed(claims(akid="key-1"))
    assert verify(verifier, before).subject == "user-1"
    revoked["key-1"] = time.time() + 0.01
    assert reason_of(verifier, before) == "TOKEN_REVOKED"
    revoked["user-1"] = time.time() + 0.01
    assert reason_of(verifier, signed(claims(akid="key-2"))) == "TOKEN_REVOKED"
    time.sleep(0.02)
    assert verify(verifier, signed(claims(iat=round(time.time(), 3), akid="key-2"))).subject == "user-1"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"exp": int(time.time()) - 31}, "TOKEN_EXPIRED"),  # past the 30 s leeway
    ({"exp": None}, "TOKEN_INVALID"),
    ({"aud": "someone-else"}, "TOKEN_WRONG_AUDIENCE"),
    ({"aud": None}, "TOKEN_INVALID"),
    ({"iss": "someone-else"}, "TOKEN_INVALID"),
    ({"iss": None}, "TOKEN_INVALID"),
    ({"kind": None}, "TOKEN_INVALID"),
])
def test_claims_are_checked(changes, reason):
    assert reason_of(TokenVerifier(Keys(("k1", KEY))), signed(claims(**changes))) == reason


def test_only_eddsa_is_accepted():
    verifier = TokenVerifier(Keys(("k1", KEY)))
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"})
    assert reason_of(verifier, unsigned) == "TOKEN_INVALID"
    # The public key is no secret: a token "signed" with it as an HMAC key must not pass.
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims()).encode())
    mac = hmac.new(public_of(KEY).encode(), head.encode(), hashlib.sha256).digest()
    assert reason_of(verifier, f"{head}.{b64(mac)}") == "TOKEN_INVALID"


def test_a_token_signed_by_another_key_is_refused():
    assert reason_of(TokenVerifier(Keys(("k1", KEY))), signed(key=new_private_key_pem())) == "TOKEN_INVALID"


def test_a_new_key_id_refetches_the_keys_at_most_once_in_a_while(monkeypatch):
    keys = Keys(("k1", KEY))
    verifier = TokenVerifier(keys)
    verify(verifier, signed())
    assert keys.fetches == 1
    rotated = new_private_key_pem()
    keys.keys.append(("k2", rotated))
    monkeypatch.setattr(qruntime_kit.tokens, "REFETCH_INTERVAL_SECONDS", 0)
    verify(verifier, signed(key=rotated, kid="k2"))  # unknown id: fetched again
    assert keys.fetches == 2
    monkeypatch.setattr(qruntime_kit.tokens, "REFETCH_INTERVAL_SECONDS", 3600)
    for _ in range(3):  # made-up key ids cannot make it ask the auth service on every call
        assert reason_of(verifier, signed(kid="made-up")) == "TOKEN_INVALID"
    assert keys.fetches == 2
    verify(verifier, signed())  # known ids need no fetch
    assert keys.fetches == 2


def test_an_unreachable_auth_service_is_unavailable_not_a_bad_token():
    keys = Keys(("k1", KEY))
    keys.down = True
    with pytest.raises(ServiceError) as caught:
        verify(TokenVerifier(keys), signed())
    assert not isinstance(caught.value, Unauthenticated)
    assert caught.value.reason == "AUTH_UNAVAILABLE"


def test_a_token_verified_before_is_still_refused_once_it_expires(monkeypatch):
    verifier = TokenVerifier(Keys(("k1", KEY)))
    now = time.time()
    token = signed(claims(iat=int(now), exp=int(now) + 60))
    assert verify(verifier, token).subject == "user-1"  # verified, and remembered
    monkeypatch.setattr(qruntime_kit.tokens.time, "time", lambda: now + 60 + 31)
    assert reason_of(verifier, token) == "TOKEN_EXPIRED"


def test_a_remembered_token_is_refused_once_the_next_poll_sees_its_revocation(monkeypatch):
    """A verified token is remembered, but each use still meets the revocations, polled every
    REVOCATION_POLL_SECONDS while calls come in: a revoked key's token is refused well within 5 s."""
    now = [time.time()]
    monkeypatch.setattr(qruntime_kit.tokens.time, "time", lambda: now[0])
    revoked: dict[str, float] = {}
    polls: list[float] = []

    async def revocations(since):
        polls.append(now[0])
        return list(revoked.items())

    verifier = TokenVerifier(Keys(("k1", KEY)), revocations)
    token = signed(claims(akid="key-1"))
    assert verify(verifier, token).subject == "user-1"  # verified, remembered, revocations polled
    revoked["key-1"] = now[0] + 0.1
    now[0] += 1.0
    assert verify(verifier, token).subject == "user-1"  # remembered, and the next poll is not due yet
    now[0] += qruntime_kit.tokens.REVOCATION_POLL_SECONDS
    assert reason_of(verifier, token) == "TOKEN_REVOKED"
    assert len(polls) == 2 and polls[1] - revoked["key-1"] < 5
