"""Token buckets that limit CreateToken attempts per API key id and per peer, in memory.

Each replica of the auth service limits on its own; a guesser spread over replicas gets their sum,
which is still far below what guessing a 256-bit secret would need. What the limits stop is a
flood that costs the service its CPU, and a leaked key id being hammered.
"""

from __future__ import annotations

import threading
import time

from qruntime_kit.errors import ResourceExhausted

_MAX_BUCKETS = 100_000  # past this, full buckets are forgotten: memory stays bounded


class RateLimiter:
    """`rate` attempts a second per name, in bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, name: str, what: str) -> None:
        """Spend one attempt of name; ResourceExhausted with RetryInfo when none is left."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(name, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            if tokens < 1:
                self._buckets[name] = (tokens, now)
                wait = (1 - tokens) / self._rate
                raise ResourceExhausted(
                    f"too many token requests for this {what}; try again in {wait:.1f} s",
                    reason="TOO_MANY_TOKEN_REQUESTS", metadata={"limit": what}, retry_after=wait,
                )
            self._buckets[name] = (tokens - 1, now)
            if len(self._buckets) > _MAX_BUCKETS:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        full = [n for n, (t, at) in self._buckets.items() if t + (now - at) * self._rate >= self._burst]
        for name in full:
            del self._buckets[name]
