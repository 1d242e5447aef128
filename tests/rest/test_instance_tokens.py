"""The front door's cache of instance tokens: one exchange per token and instance until near expiry,
shared by concurrent first calls, forgotten when a service refuses it. (The exchange itself, against
real servers: test_rest_signin.py and tests/auth/test_token_exchange.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from qruntime_suite.instance_tokens import REFRESH_BEFORE_EXPIRY_SECONDS, InstanceTokens


class Auth:
    """Stands in for AuthService.ExchangeToken: numbered tokens living `lifetime` seconds."""

    def __init__(self, lifetime: float = 3600, delay: float = 0.0) -> None:
        self.lifetime, self.delay, self.calls = lifetime, delay, []

    async def exchange(self, token: str, instance: str) -> tuple[str, int]:
        self.calls.append((token, instance))
        await asyncio.sleep(self.delay)
        if instance == "refused":
            raise PermissionError("no role")
        return f"{instance}-{len(self.calls)}", int(time.time() + self.lifetime)


def test_one_exchange_per_token_and_instance_until_a_minute_before_expiry(monkeypatch):
    auth = Auth()
    tokens = InstanceTokens(auth.exchange)

    async def scenario():
        assert await tokens.get("t", "a") == "a-1"
        assert await tokens.get("t", "a") == "a-1"
        assert await tokens.get("t", "b") == "b-2"
        assert await tokens.get("u", "a") == "a-3"
        now = time.time()
        monkeypatch.setattr(time, "time", lambda: now + 3600 - REFRESH_BEFORE_EXPIRY_SECONDS + 1)
        assert await tokens.get("t", "a") == "a-4"  # renewed before it expires

    asyncio.run(scenario())
    assert tokens.exchanges == len(auth.calls) == 4


def test_a_token_bound_by_its_sources_expiry_is_kept_to_its_end(monkeypatch):
    auth = Auth(lifetime=90)  # the source had 90 s left: exchanging again gives no longer a life
    tokens = InstanceTokens(auth.exchange)

    async def scenario():
        assert await tokens.get("t", "a") == "a-1"
        now = time.time()
        monkeypatch.setattr(time, "time", lambda: now + 80)
        assert await tokens.get("t", "a") == "a-1"
        monkeypatch.setattr(time, "time", lambda: now + 91)
        assert await tokens.get("t", "a") == "a-2"

    asyncio.run(scenario())


def test_concurrent_first_calls_share_one_exchange_and_its_failure():
    auth = Auth(delay=0.05)
    tokens = InstanceTokens(auth.exchange)

    async def scenario():
        got = await asyncio.gather(*(tokens.get("t", "a") for _ in range(10)))
        assert got == ["a-1"] * 10
        failed = await asyncio.gather(*(tokens.get("t", "refused") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(f, PermissionError) for f in failed)
        with pytest.raises(PermissionError):  # a failure is not cached: asked again
            await tokens.get("t", "refused")

    asyncio.run(scenario())
    assert auth.calls == [("t", "a"), ("t", "refused"), ("t", "refused")]


def test_a_forgotten_token_is_exchanged_again_and_the_oldest_go_past_the_limit():
    auth = Auth()
    tokens = InstanceTokens(auth.exchange, max_cached=2)

    async def scenario():
        await tokens.get("t", "a")
        tokens.forget("t", "a")
        assert await tokens.get("t", "a") == "a-2"
        await tokens.get("t", "b")
        await tokens.get("t", "a")  # used last: b is the oldest now
        await tokens.get("t", "c")
        assert await tokens.get("t", "a") == "a-2" and await tokens.get("t", "b") == "b-5"

    asyncio.run(scenario())
