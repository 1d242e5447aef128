"""Instance tokens for HTTP calls that name their instance in a Service-CRN header.

IBM Cloud users sign in once (POST /identity/token with the API key alone) and name the instance on
every call. qruntime's services take tokens scoped to one instance, so the front door exchanges the
caller's token for one scoped to the named instance (AuthService.ExchangeToken, where auth makes
every check) and keeps it until shortly before it expires: one exchange per token and instance, not
one per call. Revocation is unaffected: the services refuse a revoked derived token as they would
its source (same user, same API key), and a refused one is forgotten here so the next call asks
auth again, which refuses a revoked source at once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import jwt

# Exchange (caller's token, instance) -> (instance token, its expiry in Unix seconds).
Exchange = Callable[[str, str], Awaitable[tuple[str, int]]]
REFRESH_BEFORE_EXPIRY_SECONDS = 60
MAX_CACHED = 10_000


def unverified_claims(token: str) -> dict | None:
    """What a token says of itself, to choose what to do with it; the services verify it. None: not
    a token at all (the service will say so)."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None


class InstanceTokens:
    """Derived instance tokens by (caller's token, instance), least recently used dropped first."""

    def __init__(self, exchange: Exchange, max_cached: int = MAX_CACHED) -> None:
        self._exchange = exchange
        self._max = max_cached
        self._cached: collections.OrderedDict[tuple[str, str], tuple[str, float]] = collections.OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self.exchanges = 0  # how many times auth was asked (the cache's misses)

    async def get(self, token: str, instance: str) -> str:
        """An instance token for the caller's token; concurrent first calls share one exchange."""
        key = (token, instance)
        cached = self._cached.get(key)
        if cached is not None and time.time() < cached[1]:
            self._cached.move_to_end(key)
            return cached[0]
        pending = self._pending.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled itself
                return await self.get(token, instance)
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self.exchanges += 1
            derived, expiry = await self._exchange(token, instance)
        except Exception as err:
            future.set_exception(err)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        except BaseException:  # this caller was cancelled: the others waiting ask again
            future.cancel()
            raise
        finally:
            del self._pending[key]
        # Renewed a minute before expiry; one bound by its source's expiry is kept to the end
        # (exchanging again would give no longer a life).
        remaining = expiry - time.time()
        renew_at = expiry - REFRESH_BEFORE_EXPIRY_SECONDS if remaining > 2 * REFRESH_BEFORE_EXPIRY_SECONDS else expiry
        self._cached[key] = (derived, renew_at)
        if len(self._cached) > self._max:
            self._cached.popitem(last=False)
        future.set_result(derived)
        return derived

    def forget(self, token: str, instance: str) -> None:
        """Drop the derived token (a service refused it: revoked or expired)."""
        self._cached.pop((token, instance), None)
