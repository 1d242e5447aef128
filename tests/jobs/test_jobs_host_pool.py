"""The warm pool of program hosts: when it starts a taken host's replacement (real forked hosts)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from qruntime_jobs.hosts import HostPool
from qruntime_kit.limits import Limits

LIMITS = Limits(memory_bytes=512 * 1024 * 1024, max_processes=64)


async def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the pool did not get there in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _pool(refill_delay: float | None = None, *, filled: bool = True) -> AsyncIterator[HostPool]:
    """A pool of one warm trusted host, started and filled (unless not filled), stopped after."""
    pool = HostPool(sandboxed=False, warm=1, limits=LIMITS, refill_delay=refill_delay)
    try:
        if filled:
            pool.start()
            await _until(lambda: pool.warm_now == (1, 0))
        yield pool
    finally:
        await pool.stop()


def test_a_pool_without_a_delay_replaces_a_taken_host_at_once():
    async def scenario():
        async with _pool() as pool:
            host = await pool.acquire()
            assert pool.warm_now == (0, 1)  # its replacement is starting while the job runs
            await _until(lambda: pool.warm_now == (1, 0))
            pool.release(host)

    asyncio.run(scenario())


def test_a_delayed_pool_replaces_a_taken_host_when_its_job_ends():
    async def scenario():
        async with _pool(refill_delay=60) as pool:
            host = await pool.acquire()
            await asyncio.sleep(0.3)
            assert pool.warm_now == (0, 0)  # nothing starts beside the job
            pool.release(host)
            assert pool.warm_now == (0, 1)
            await _until(lambda: pool.warm_now == (1, 0))
            second = await pool.acquire()  # the replacement is a working host
            assert second is not host and second.worker.returncode is None
            pool.release(second)

    asyncio.run(scenario())


def test_a_delayed_pool_replaces_the_host_of_a_long_job_after_the_delay():
    async def scenario():
        async with _pool(refill_delay=0.5) as pool:
            host = await pool.acquire()
            await _until(lambda: pool.warm_now == (1, 0))  # while the job still holds its host
            assert host.worker.returncode is None
            pool.release(host)
            await asyncio.sleep(0.1)
            assert pool.warm_now == (1, 0)  # full: the job's end starts nothing more

    asyncio.run(scenario())


def test_a_cold_start_of_a_delayed_pool_also_waits_for_the_job_to_end():
    async def scenario():
        async with _pool(refill_delay=60, filled=False) as pool:
            host = await pool.acquire()  # nothing warm: the job starts its own host
            assert host.worker.returncode is None and pool.warm_now == (0, 0)
            pool.release(host)
            await _until(lambda: pool.warm_now == (1, 0))

    asyncio.run(scenario())
